"""Metrics: the JSONL log (flushed per line, truncated on resume), TensorBoard
events, file:line errors, the curves plot, the summary table, the progress bar."""

import io
import json
import math
import os
import struct

import numpy as np
import pytest

from rsearch_jax import metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _lines(path):
  """The file parsed with the json module alone (not read_metrics)."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _png_size(path):
  """(width, height) from the PNG's IHDR chunk."""
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


def test_write_and_read_back(tmp_path):
  writer = metrics.MetricsWriter(tmp_path, tensorboard=False)
  writer.write(1, {"reward": 0.5, "kl": np.float32(0.25), "tokens": 12}, stage="stage1")
  writer.write(2, {"reward": np.array(0.75), "kl": float("nan")}, stage="stage1")
  writer.write_text(2, "trace", "<think>a</think>\n<answer>b</answer> é")
  # every line is on disk before close: a crash here loses nothing
  on_disk = _lines(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["stage"], r["reward"]) for r in on_disk] == [
      (1, "stage1", 0.5), (2, "stage1", 0.75)]
  assert on_disk[0]["kl"] == 0.25 and on_disk[0]["tokens"] == 12.0
  assert math.isnan(on_disk[1]["kl"])
  assert all(isinstance(r["time"], float) for r in on_disk)
  assert _lines(tmp_path / "traces.jsonl")[0]["text"].endswith("</answer> é")
  writer.close()
  records = metrics.read_metrics(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2]
  assert records[0] == on_disk[0]


def test_write_rejects_bad_metrics(tmp_path):
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as writer:
    with pytest.raises(ValueError, match="'step' is reserved"):
      writer.write(1, {"step": 3}, stage="s")
    with pytest.raises(ValueError, match="metric 'reward'.*not a number"):
      writer.write(1, {"reward": "high"}, stage="s")
  assert metrics.read_metrics(tmp_path / "metrics.jsonl") == []


def _log(writer, steps, stage="s1"):
  for s in steps:
    writer.write(s, {"reward": s / 10}, stage=stage)
    writer.write_text(s, "trace", f"text {s}")


def test_resume_drops_records_after_the_checkpoint(tmp_path):
  writer = metrics.MetricsWriter(tmp_path, tensorboard=False)
  _log(writer, range(1, 6))
  writer._metrics.write('{"step": 6, "rew')  # the kill cut this line short
  writer._metrics.flush()
  del writer  # killed: never closed
  with metrics.MetricsWriter(tmp_path, tensorboard=False, resume_step=3) as writer:
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    _log(writer, range(4, 7), stage="s2")
  records = metrics.read_metrics(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
  assert [r["stage"] for r in records] == ["s1"] * 3 + ["s2"] * 3
  assert [r["step"] for r in _lines(tmp_path / "traces.jsonl")] == [1, 2, 3, 4, 5, 6]
  # resume_step=None: a new run, the old log is gone
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as writer:
    _log(writer, [1])
  assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [1]


@pytest.mark.parametrize("bad,message", [
    ('{"step": 3, "reward": 0.1\n', "not valid JSON"),
    ('[1, 2]\n', "expected a JSON object"),
    ('{"reward": 0.1}\n', "missing or non-integer field 'step'"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "reward": 0.1}\n\n' + bad + '{"step": 4}\n')
  with pytest.raises(ValueError) as err:
    metrics.read_metrics(path)
  assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)
  # a resumed writer refuses to silently drop a damaged middle line too
  with pytest.raises(ValueError, match=f"{path}:3: "):
    metrics.MetricsWriter(tmp_path, tensorboard=False, resume_step=10)


def _tb_events(logdir):
  """[(step, tag, plugin, value)] of every summary, read with TensorFlow."""
  import tensorflow as tf

  out = []
  for name in sorted(os.listdir(logdir / "tensorboard")):
    for event in tf.compat.v1.train.summary_iterator(str(logdir / "tensorboard" / name)):
      for v in event.summary.value:
        value = tf.make_ndarray(v.tensor)
        out.append((event.step, v.tag, v.metadata.plugin_data.plugin_name,
                    value.item() if value.dtype != object else value.item().decode()))
  return out


def test_tensorboard_scalars_text_and_resume(tmp_path):
  writer = metrics.MetricsWriter(tmp_path)
  _log(writer, range(1, 5))
  del writer  # killed after step 4; the checkpoint was at step 2
  with metrics.MetricsWriter(tmp_path, resume_step=2) as writer:
    writer.write(3, {"reward": 0.125, "eval/accuracy": 0.5}, stage="s2")
  events = _tb_events(tmp_path)
  scalars = sorted((s, tag, v) for s, tag, plugin, v in events if plugin == "scalars")
  assert scalars == [(1, "reward", pytest.approx(0.1)), (2, "reward", pytest.approx(0.2)),
                     (3, "eval/accuracy", 0.5), (3, "reward", 0.125)]
  texts = sorted((s, tag, v) for s, tag, plugin, v in events if plugin == "text")
  assert texts == [(1, "trace", "text 1"), (2, "trace", "text 2")]


def _two_stage_records():
  rng = np.random.default_rng(0)
  records = []
  for step in range(1, 61):
    stage = "stage1" if step <= 25 else "stage2"
    records.append({"step": step, "stage": stage,
                    "reward": float(1 - np.exp(-step / 20) + 0.05 * rng.standard_normal()),
                    "kl": 0.002 * step, "retrievals": float(rng.integers(0, 3))})
  return records


def test_plot_curves_writes_a_png(tmp_path):
  out = metrics.plot_curves(_two_stage_records(), tmp_path / "plots" / "curves.png",
                            keys=["reward", "kl", "retrievals"], title="run")
  assert out.read_bytes()[:8] == PNG_SIGNATURE
  assert out.stat().st_size > 30_000
  width, height = _png_size(out)
  assert width > 1000 and height > 300  # three panels side by side
  with pytest.raises(ValueError, match="no metric"):
    metrics.plot_curves([{"step": 1, "stage": "s"}], tmp_path / "none.png")


def test_smoothed_curves_restart_at_each_stage():
  records = _two_stage_records()
  points = [(r["step"], r["reward"], r["stage"]) for r in records]
  got = metrics.smoothed(points, window=4)
  assert [stage for stage, _, _ in got] == ["stage1", "stage2"]
  for stage, steps, means in got:
    values = np.array([r["reward"] for r in records if r["stage"] == stage])
    # Reference: the trailing mean of up to 4 values of the same stage.
    want = [values[max(0, i - 3):i + 1].mean() for i in range(len(values))]
    assert steps == [r["step"] for r in records if r["stage"] == stage]
    np.testing.assert_allclose(means, want, rtol=1e-12)
  # A window of 1 is the raw curve.
  np.testing.assert_allclose(
      [m for _, _, ms in metrics.smoothed(points, 1) for m in ms],
      [p[1] for p in points], rtol=1e-12)


def test_plot_runs_compares_runs_and_names_a_missing_metric(tmp_path):
  a = _two_stage_records()
  b = [dict(r, reward=r["reward"] + 0.5) for r in a]
  out = metrics.plot_runs({"a": a, "b": b}, tmp_path / "cmp.png",
                          ["reward", "kl"], stages=["stage2"], title="a vs b")
  assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 20_000
  width, _ = _png_size(out)
  assert width > 1000  # two panels side by side
  with pytest.raises(ValueError, match=r"no values of \['rewad'\] in the runs "
                                       r"\['a', 'b'\]"):
    metrics.plot_runs({"a": a, "b": b}, tmp_path / "x.png", ["reward", "rewad"])
  with pytest.raises(ValueError, match=r"\(stages \['rl'\]\)"):
    metrics.plot_runs({"a": a}, tmp_path / "x.png", ["reward"], stages=["rl"])


def test_plot_from_the_jsonl_log(tmp_path):
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as writer:
    for r in _two_stage_records():
      writer.write(r["step"], {k: r[k] for k in ("reward", "kl")}, stage=r["stage"])
  out = metrics.plot_curves(metrics.read_metrics(tmp_path / "metrics.jsonl"),
                            tmp_path / "curves.png")  # keys: every metric
  assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 20_000


ROWS = [{"after": "start", "hotpotqa": 0.123456, "bamboogle": 0.2, "n": 125},
        {"after": "stage1", "hotpotqa": 0.45, "n": 125},
        {"after": "a|b", "hotpotqa": 0.6543, "bamboogle": 1e-05, "n": 125}]


def test_summary_table_markdown():
  table = metrics.summary_table(ROWS, ["after", "hotpotqa", "bamboogle", "n"])
  assert table.splitlines() == [
      "| after | hotpotqa | bamboogle | n |",
      "|:---|---:|---:|---:|",
      "| start | 0.1235 | 0.2 | 125 |",
      "| stage1 | 0.45 |  | 125 |",
      "| a\\|b | 0.6543 | 1e-05 | 125 |",
  ]


def test_save_table_png(tmp_path):
  out = metrics.save_table_png(ROWS, ["after", "hotpotqa", "bamboogle", "n"],
                               tmp_path / "summary.png", "evaluation")
  assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 5_000


class _FakeTTY(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar(monkeypatch):
  monkeypatch.delenv("RSEARCH_NO_PROGRESS", raising=False)
  fake = _FakeTTY()
  monkeypatch.setattr("sys.stderr", fake)
  bar = metrics.progress(10, desc="stage1")
  assert not bar.disable
  bar.update(3)
  bar.set_postfix(reward=0.5, kl=0.01)
  bar.close()
  shown = fake.getvalue()
  assert "stage1" in shown and "3/10" in shown and "reward=0.5" in shown
  monkeypatch.setenv("RSEARCH_NO_PROGRESS", "1")
  assert metrics.progress(10, desc="x").disable
  monkeypatch.delenv("RSEARCH_NO_PROGRESS")
  monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
  bar = metrics.progress(10, desc="x")
  assert bar.disable
  bar.set_postfix(reward=1.0)  # a no-op, not an error
  bar.update(1)
  bar.close()
