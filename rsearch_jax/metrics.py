"""Training metrics: a crash-safe JSONL log, TensorBoard scalars, plots and tables.

Main entry points:
  MetricsWriter(logdir, tensorboard=True, resume_step=None)
    .write(step, metrics, stage)     one line of `logdir/metrics.jsonl` + scalars
    .write_text(step, name, text)    one line of `logdir/traces.jsonl` + TB text
    .close()
  read_metrics(path) -> list[dict]   the records of a metrics / traces JSONL file
  plot_curves(records, out_png, keys=None)    one subplot per metric vs step,
                                              stage boundaries marked
  plot_runs(runs, out_png, keys)     several runs' metrics, a line per run
  smoothed(points, window)           per-stage moving averages (the curves')
  summary_table(rows, columns) -> str         a Markdown table
  save_table_png(rows, columns, out_png, title)   the same table as an image
  progress(total, desc)              a tqdm bar (silent when not on a terminal)

The JSONL file is the record of a run; TensorBoard's event files
(`logdir/tensorboard/`) are a view of it, rebuilt from it when a run resumes, so
both hold each step once. Every line is flushed as it is written: a killed
process loses nothing it had logged (a line cut short by the kill itself is
dropped on resume).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

from rsearch_jax._jsonl import read_objects

_RESERVED = ("step", "stage", "time")
_METRICS = "metrics.jsonl"
_TRACES = "traces.jsonl"
_TB = "tensorboard"


def _is_primary() -> bool:
  """Only process 0 of a multi-host run writes logs."""
  if "jax" not in sys.modules:
    return True
  return sys.modules["jax"].process_index() == 0


def _scalar(key: str, value) -> float:
  try:
    out = float(value)  # Python / NumPy / 0-d JAX numbers
  except (TypeError, ValueError) as e:
    raise ValueError(f"metric {key!r}: {type(value).__name__} {value!r} is not a "
                     "number") from e
  return out


def _records(path: pathlib.Path, *, drop_cut_end: bool):
  """[(line text, record)] of a metrics JSONL file; each needs a `step`."""
  out = []
  for lineno, line, record in read_objects(path, drop_cut_end=drop_cut_end):
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
      raise ValueError(f"{path}:{lineno}: missing or non-integer field 'step' "
                       f"({step!r})")
    out.append((line if line.endswith("\n") else line + "\n", record))
  return out


def read_metrics(path) -> list[dict[str, Any]]:
  """Records of a metrics (or traces) JSONL file, in file order.

  Raises:
    FileNotFoundError: no such file.
    ValueError: a line that is not a JSON object with an integer `step`,
      named as `path:line`.
  """
  return [record for _, record in _records(pathlib.Path(path), drop_cut_end=False)]


class _TensorBoard:
  """TensorBoard scalars and text through TensorFlow's summary writer.

  Written with `tf.summary.write` and the scalar / text plugins' metadata, so
  the `tensorboard` package itself is needed only to view them.
  """

  def __init__(self, logdir: pathlib.Path):
    import tensorflow as tf  # slow to import: only when TensorBoard is wanted
    from tensorflow.core.framework import summary_pb2

    self._tf = tf
    self._writer = tf.summary.create_file_writer(str(logdir))

    def meta(plugin, data_class):
      return summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin),
          data_class=data_class)

    self._scalar_meta = meta("scalars", summary_pb2.DATA_CLASS_SCALAR)
    self._text_meta = meta("text", summary_pb2.DATA_CLASS_TENSOR)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    tf = self._tf
    with self._writer.as_default():
      for key, value in values.items():
        tf.summary.write(key, tf.constant(value, tf.float32), step=step,
                         metadata=self._scalar_meta)

  def text(self, step: int, name: str, text: str) -> None:
    tf = self._tf
    with self._writer.as_default():
      tf.summary.write(name, tf.constant(text), step=step, metadata=self._text_meta)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MetricsWriter:
  """Appends per-step metrics and sample traces to `logdir` (see module doc).

  Attributes:
    logdir: the directory holding metrics.jsonl, traces.jsonl, tensorboard/.
    metrics_path: `logdir/metrics.jsonl`.
    traces_path: `logdir/traces.jsonl`.
  """

  def __init__(self, logdir, *, tensorboard: bool = True,
               resume_step: int | None = None):
    """Opens the logs of a run.

    Args:
      logdir: created if missing.
      tensorboard: also write TensorBoard event files (imports TensorFlow).
      resume_step: the step a resumed run restarts after: records with a
        larger step (logged after that checkpoint by the run that stopped) are
        dropped, so the continued log holds each step once. None starts a new
        run: any earlier logs in `logdir` are dropped.
    """
    self.logdir = pathlib.Path(logdir)
    self.metrics_path = self.logdir / _METRICS
    self.traces_path = self.logdir / _TRACES
    self._primary = _is_primary()
    self._metrics = self._traces = self._tb = None
    if not self._primary:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    keep = -1 if resume_step is None else int(resume_step)
    kept_metrics = self._truncate(self.metrics_path, keep)
    kept_traces = self._truncate(self.traces_path, keep)
    if tensorboard:
      # Event files cannot be cut at a step: rebuild them from what was kept.
      shutil.rmtree(self.logdir / _TB, ignore_errors=True)
      self._tb = _TensorBoard(self.logdir / _TB)
      for r in kept_metrics:
        self._tb.scalars(r["step"], _tb_scalars(r))
      for r in kept_traces:
        self._tb.text(r["step"], str(r.get("name", "trace")), str(r.get("text", "")))
      self._tb.flush()
    self._metrics = open(self.metrics_path, "a", encoding="utf-8")
    self._traces = open(self.traces_path, "a", encoding="utf-8")

  @staticmethod
  def _truncate(path: pathlib.Path, keep_until: int) -> list[dict]:
    """Drops records with step > keep_until (atomically); returns the rest."""
    if not path.exists():
      return []
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
    parsed = _records(path, drop_cut_end=True)
    kept = [(line, r) for line, r in parsed if r["step"] <= keep_until]
    if "".join(line for line, _ in kept) != "".join(lines):
      tmp = path.with_name(path.name + ".tmp")
      with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line for line, _ in kept)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    return [r for _, r in kept]

  def write(self, step: int, metrics: Mapping[str, Any], stage: str) -> None:
    """Logs one step: a JSON line {step, stage, time, **metrics} and scalars.

    Raises:
      ValueError: a metric named step / stage / time, or a value that is not a
        number.
    """
    values = {}
    for key, value in metrics.items():
      if key in _RESERVED:
        raise ValueError(f"metric name {key!r} is reserved (step, stage, time)")
      values[str(key)] = _scalar(key, value)
    if not self._primary:
      return
    record = {"step": int(step), "stage": str(stage), "time": time.time(), **values}
    self._metrics.write(json.dumps(record) + "\n")
    self._metrics.flush()
    if self._tb is not None:
      self._tb.scalars(int(step), values)
      self._tb.flush()

  def write_text(self, step: int, name: str, text: str) -> None:
    """Logs a sample trace (a rollout's text) under `name`."""
    if not self._primary:
      return
    record = {"step": int(step), "name": str(name), "time": time.time(),
              "text": str(text)}
    self._traces.write(json.dumps(record, ensure_ascii=False) + "\n")
    self._traces.flush()
    if self._tb is not None:
      self._tb.text(int(step), str(name), str(text))
      self._tb.flush()

  def close(self) -> None:
    for f in (self._metrics, self._traces, self._tb):
      if f is not None:
        f.close()
    self._metrics = self._traces = self._tb = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _tb_scalars(record: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in record.items()
          if k not in _RESERVED and _is_number(v)}


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- plots and tables ----------------------------------------------------------


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only, never a window
  import matplotlib.pyplot as plt

  return plt


def _stage_starts(records: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
  """(first step, stage) of each run of consecutive records of one stage."""
  starts: list[tuple[int, str]] = []
  for r in records:
    stage = r.get("stage")
    if stage is not None and (not starts or starts[-1][1] != stage):
      starts.append((r["step"], str(stage)))
  return starts


def _panels(plt, n: int, ncols: int):
  """A figure with n panels, ncols to a row."""
  nrows = math.ceil(n / ncols)
  return plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows),
                      squeeze=False, layout="constrained")


def _points(records: Sequence[Mapping[str, Any]], key: str
            ) -> list[tuple[int, float, Any]]:
  """(step, value, stage) of the records with a finite `key`."""
  return [(r["step"], float(r[key]), r.get("stage")) for r in records
          if _is_number(r.get(key)) and math.isfinite(r[key])]


def _save(plt, fig, axes, n: int, title: str | None, out_png) -> pathlib.Path:
  """Hides the unused panels, titles the figure and writes it."""
  for ax in list(axes.flat)[n:]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  out_png = pathlib.Path(out_png)
  out_png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
  return out_png


def plot_curves(records: Sequence[Mapping[str, Any]], out_png,
                keys: Sequence[str] | None = None, *, title: str | None = None,
                smooth: int | None = None) -> pathlib.Path:
  """Plots metrics against step, one subplot per metric, into a PNG.

  Args:
    records: dicts with `step`, optionally `stage`, and metric values (the
      output of `read_metrics`, or the trainer's history).
    out_png: the image to write.
    keys: which metrics (default: every numeric field but step and time).
    title: figure title.
    smooth: moving-average window drawn over the raw curve, restarting at
      each stage (`smoothed`; default: about a twentieth of the points; 1
      disables).

  Stage boundaries (where `stage` changes, among the records that hold a
  plotted metric) are dashed vertical lines labelled with the stage's name.
  """
  records = sorted((r for r in records if "step" in r), key=lambda r: r["step"])
  if keys is None:
    keys = sorted({k for r in records for k, v in r.items()
                   if k not in _RESERVED and _is_number(v)})
  keys = list(keys)
  if not keys:
    raise ValueError("plot_curves: no metric to plot")
  plotted = [r for r in records if any(_is_number(r.get(k)) for k in keys)]
  starts = _stage_starts(plotted)
  plt = _pyplot()
  fig, axes = _panels(plt, len(keys), min(3, math.ceil(math.sqrt(len(keys)))))
  for ax, key in zip(axes.flat, keys):
    points = _points(records, key)
    if points:
      steps, values, _ = zip(*points)
      window = smooth if smooth is not None else max(1, len(points) // 20)
      ax.plot(steps, values, lw=1.0, color="tab:blue",
              alpha=0.35 if window > 1 else 1.0, marker="." if len(points) < 40 else None)
      if window > 1:
        for i, (_, s_steps, means) in enumerate(smoothed(points, window)):
          ax.plot(s_steps, means, lw=1.8, color="tab:blue",
                  label=f"mean of {window} (per stage)" if i == 0 else None)
        ax.legend(loc="best", fontsize=8)
      # Each panel spans its own metric's steps (RL metrics: the RL stages).
      lo, hi = min(steps), max(steps)
      pad = max(1.0, 0.02 * (hi - lo))
      ax.set_xlim(lo - pad, hi + pad)
    else:
      lo, hi = -math.inf, math.inf
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for i, (step, stage) in enumerate(starts):
      end = starts[i + 1][0] if i + 1 < len(starts) else math.inf
      if end <= lo or step > hi:
        continue  # the stage has no point in this panel's range
      if i > 0 and step > lo:
        ax.axvline(step, color="tab:red", ls="--", lw=1.0)
      ax.text(max(step, lo), 1.0, f" {stage}", transform=ax.get_xaxis_transform(),
              va="bottom", ha="left", fontsize=8, color="tab:red", clip_on=False)
    ax.set_title(key, pad=14)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  return _save(plt, fig, axes, len(keys), title, out_png)


def plot_runs(runs: Mapping[str, Sequence[Mapping[str, Any]]], out_png,
              keys: Sequence[str], *, stages: Sequence[str] | None = None,
              title: str | None = None, smooth: int | None = None
              ) -> pathlib.Path:
  """Plots several runs' metrics against step, one subplot per metric and a
  line per run, into a PNG (e.g. a run and its ablation branched from it).

  Args:
    runs: run name -> records (`read_metrics` of its metrics.jsonl).
    keys: the metrics to compare.
    stages: only records of these stages (default: all).
    smooth: per-stage moving-average window (`smoothed`; default: about a
      tenth of a run's points; 1 draws the raw values).

  Raises ValueError naming the runs and metrics when a metric has no value
  in any run (a misspelled key, or a stage the runs do not have).
  """
  if not runs:
    raise ValueError("plot_runs: no run to plot")
  keys = list(keys)
  chosen = {name: sorted((r for r in records if "step" in r and
                          (stages is None or r.get("stage") in stages)),
                         key=lambda r: r["step"])
            for name, records in runs.items()}
  missing = [k for k in keys if not any(
      _is_number(r.get(k)) for records in chosen.values() for r in records)]
  if missing or not keys:
    raise ValueError(f"plot_runs: no values of {missing or keys} in the runs "
                     f"{sorted(runs)}" + (f" (stages {list(stages)})" if stages else ""))
  plt = _pyplot()
  fig, axes = _panels(plt, len(keys), min(3, len(keys)))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, key in zip(axes.flat, keys):
    for i, (name, records) in enumerate(chosen.items()):
      points = _points(records, key)
      if not points:
        continue
      color = colors[i % len(colors)]
      window = smooth if smooth is not None else max(1, len(points) // 10)
      if window > 1:
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=0.8,
                color=color, alpha=0.25)
      for j, (_, steps, means) in enumerate(smoothed(points, window)):
        ax.plot(steps, means, lw=1.8, color=color,
                label=(name + (f" (mean of {window})" if window > 1 else ""))
                if j == 0 else None)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
  return _save(plt, fig, axes, len(keys), title, out_png)


def smoothed(points: Sequence[tuple[int, float, Any]], window: int
             ) -> list[tuple[Any, list[int], list[float]]]:
  """Moving averages that restart at each stage: for each run of consecutive
  (step, value, stage) points of one stage, (stage, steps, means), each mean
  over the last `window` values of that run (fewer at its start), so that no
  curve mixes two stages' values."""
  out: list[tuple[Any, list[int], list[float]]] = []
  for step, value, stage in points:
    if not out or out[-1][0] != stage:
      out.append((stage, [], []))
      values: list[float] = []
      total = 0.0
    values.append(value)
    total += value
    if len(values) > window:
      total -= values[-window - 1]
    out[-1][1].append(step)
    out[-1][2].append(total / min(len(values), window))
  return out


def _cell(value) -> str:
  if value is None:
    return ""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _is_numeric_column(rows, column) -> bool:
  values = [r.get(column) for r in rows if r.get(column) is not None]
  return bool(values) and all(_is_number(v) for v in values)


def summary_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str]) -> str:
  """A Markdown table of `rows` (dicts) with the given columns.

  Floats show 4 significant digits, missing values are empty cells, numeric
  columns are right-aligned, and `|` inside a value is escaped.
  """
  columns = list(columns)
  if not columns:
    raise ValueError("summary_table: no columns")
  head = "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"
  rule = "|" + "|".join("---:" if _is_numeric_column(rows, c) else ":---"
                        for c in columns) + "|"
  body = ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|").replace("\n", " ")
                            for c in columns) + " |" for r in rows]
  return "\n".join([head, rule, *body])


def save_table_png(rows: Sequence[Mapping[str, Any]], columns: Iterable[str],
                   out_png, title: str | None = None) -> pathlib.Path:
  """The table of `summary_table` drawn as an image (for reports)."""
  columns = list(columns)
  cells = [[_cell(r.get(c)) for c in columns] for r in rows] or [[""] * len(columns)]
  widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
  plt = _pyplot()
  fig_w = max(4.0, 0.11 * sum(w + 3 for w in widths))
  fig_h = (0.6 if title else 0.2) + 0.32 * (len(cells) + 1)
  fig, ax = plt.subplots(figsize=(fig_w, fig_h))
  ax.axis("off")
  table = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="center",
                   colWidths=[w / sum(widths) for w in widths])
  table.auto_set_font_size(False)
  table.set_fontsize(10)
  table.scale(1.0, 1.35)
  for (row, _), cell in table.get_celld().items():
    if row == 0:
      cell.set_text_props(weight="bold")
      cell.set_facecolor("#dfe7f2")
  if title:
    ax.set_title(title, fontsize=12, pad=10)
  fig.tight_layout()
  out_png = pathlib.Path(out_png)
  out_png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out_png, dpi=130, bbox_inches="tight")
  plt.close(fig)
  return out_png


# --- progress bar ----------------------------------------------------------------


def progress(total: int, desc: str = "", **kwargs):
  """A tqdm progress bar over `total` steps.

  A terminal bar, or a widget in a notebook; disabled (every method a no-op)
  when stderr is neither a terminal nor a notebook's, or when the
  environment sets RSEARCH_NO_PROGRESS=1. Show metrics with
  `bar.set_postfix(reward=..., kl=...)`.
  """
  notebook = "ipykernel" in sys.modules
  if notebook:
    from tqdm.auto import tqdm
  else:
    from tqdm import tqdm

  disable = (os.environ.get("RSEARCH_NO_PROGRESS") == "1"
             or not (notebook or (hasattr(sys.stderr, "isatty")
                                  and sys.stderr.isatty())))
  kwargs.setdefault("dynamic_ncols", True)
  return tqdm(total=total, desc=desc, disable=disable, **kwargs)


__all__ = ["MetricsWriter", "read_metrics", "plot_curves", "plot_runs",
           "smoothed", "summary_table",
           "save_table_png", "progress"]
