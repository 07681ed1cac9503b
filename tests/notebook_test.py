"""notebooks/demo.ipynb end to end: executed with nbclient on a python3 kernel
(the current interpreter), its `parameters` cell replaced by a shrunken demo,
in a temporary working directory. It must run without error, write the curves
and the summary with an evaluation row per stage, and display them and the
traces."""

import json
import os
import pathlib

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "demo.ipynb"
# Smaller still than tests/train_test.py's shrunken demo (one layer, one RL
# step): every stage runs, the plumbing is exercised, nothing is learnt. Most
# of the time goes to compiling, and each evaluation compiles a new sampler.
TINY = {
    "world.pretrain_repeats": 2, "world.num_people": 20, "world.num_films": 10,
    "world.num_companies": 6, "world.num_cities": 6,
    "model.vocab_size": 400, "model.hidden_size": 32,
    "model.intermediate_size": 64, "model.num_layers": 1,
    "data.seq_len": 320, "data.sft_examples": 8, "data.copy_examples": 8,
    "data.sft_renamed_worlds": 0, "data.sft_perturbed_worlds": 0,
    "data.sft_renamed_two_hop": 0, "data.whole_word_names": False,
    "stages.copy.steps": 2, "stages.copy.batch_size": 4,
    "stages.pretrain.steps": 3, "stages.pretrain.batch_size": 4,
    "stages.sft.steps": 4, "stages.sft.batch_size": 4,
    "stages.rl.steps": 1, "stages.rl.batch_size": 2, "rl.group_size": 2,
    "sampling.max_prompt_len": 128, "sampling.max_len": 360,
    "sampling.max_new_tokens": 32,
    "eval.num_questions": 4, "eval.batch_size": 4, "log.checkpoint_every": 100,
    "log.tensorboard": False,
}


def _parameters_cell(nb):
  cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(cells) == 1, "expected one cell tagged 'parameters'"
  return cells[0]


def test_committed_notebook_has_no_outputs_and_one_parameters_cell():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, f"cell {i}"
  source = _parameters_cell(nb).source
  for name in ("SMALL", "WORKDIR", "FRESH", "OVERRIDES", "NUM_TRACES"):
    assert f"{name} =" in source, name


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("notebook")
  workdir = tmp / "run"
  nb = nbformat.read(NOTEBOOK, as_version=4)
  _parameters_cell(nb).source = "\n".join([
      "SMALL = True", f"WORKDIR = {str(workdir)!r}", "FRESH = True",
      f"OVERRIDES = {TINY!r}", "NUM_TRACES = 2"])
  env = dict(os.environ, RSEARCH_NOTEBOOK_TEST="1", RSEARCH_NO_PROGRESS="1",
             HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)  # one device, as on Colab's CPU runtime
  client = nbclient.NotebookClient(
      nb, kernel_name="python3", timeout=600,
      resources={"metadata": {"path": str(tmp)}})
  client.execute(env=env)  # raises CellExecutionError naming the failing cell
  return nb, workdir


def _outputs(nb, mime):
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
          if mime in o.get("data", {})]


def test_notebook_runs_and_writes_curves_and_summary(executed):
  nb, workdir = executed
  assert (workdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  table = (workdir / "summary.md").read_text()
  rows = [l for l in table.splitlines() if l.startswith("|")]
  firsts = [l.strip("|").split("|")[0].strip() for l in rows]
  assert firsts[0] == "after", table
  assert [f for f in firsts if f in ("start", "copy", "pretrain", "sft", "rl")
          ] == ["start", "copy", "pretrain", "sft", "rl"], table
  assert "em/internal" in rows[0] and "em/corpus" in rows[0], table
  # The budget took effect: each stage ran its shrunken number of steps.
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [r["stage"] for r in records if "loss" in r]
  assert steps == ["copy"] * 2 + ["pretrain"] * 3 + ["sft"] * 4 + ["rl"] * 1


def test_notebook_displays_curves_table_and_traces(executed):
  nb, workdir = executed
  images = _outputs(nb, "image/png")
  assert images, "the curves were not displayed"
  markdown = "\n".join(o["data"]["text/markdown"] for o in _outputs(nb, "text/markdown"))
  assert (workdir / "summary.md").read_text().strip() in markdown
  assert "done: 10 steps" in markdown  # the live status line's final state
  traces = [o["data"]["text/html"] for o in _outputs(nb, "text/html")]
  assert len(traces) == 2, traces
  for t in traces:
    assert "<think>" in t or "&lt;think&gt;" in t  # the prompt is shown
