"""Compares runs' training curves in one PNG, a line per run: e.g. the demo
and its no-document-mask ablation branched from the same checkpoint.

    python launch/compare.py --runs=mask=runs/r1pp_demo,no_mask=runs/r1pp_nomask \
        --stages=rl --keys=reward,accuracy,format_penalty,grad_norm \
        --out=runs/mask_ablation.png

Reads each workdir's metrics.jsonl; prints, per run and metric, the mean of
the plotted values.
"""

import pathlib
import sys

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from rsearch_jax import metrics  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "name=workdir pairs, comma-separated")
_KEYS = flags.DEFINE_list("keys", ["reward", "accuracy", "retrievals"],
                          "metrics of metrics.jsonl to compare")
_STAGES = flags.DEFINE_list("stages", None, "only these stages (default: all)")
_OUT = flags.DEFINE_string("out", "compare.png", "the PNG to write")
_SMOOTH = flags.DEFINE_integer("smooth", None, "moving-average window (1: raw)")


def parse_runs(specs):
  """{name: records} from "name=workdir" specs; UsageError naming a bad one."""
  runs = {}
  for spec in specs or []:
    name, sep, workdir = spec.partition("=")
    if not sep or not name or not workdir:
      raise app.UsageError(f"--runs: {spec!r} is not name=workdir")
    if name in runs:
      raise app.UsageError(f"--runs: the name {name!r} is given twice")
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.is_file():
      raise app.UsageError(f"--runs: {name}: no metrics log at {path}")
    runs[name] = metrics.read_metrics(path)
  if not runs:
    raise app.UsageError("--runs is required, e.g. --runs=a=runs/x,b=runs/y")
  return runs


def main(argv):
  del argv
  runs = parse_runs(_RUNS.value)
  try:
    out = metrics.plot_runs(runs, _OUT.value, _KEYS.value, stages=_STAGES.value,
                            smooth=_SMOOTH.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  stages = set(_STAGES.value) if _STAGES.value else None
  print(f"{'run':16s} " + " ".join(f"{k[:14]:>14s}" for k in _KEYS.value))
  for name, records in runs.items():
    cells = []
    for k in _KEYS.value:
      vals = [float(r[k]) for r in records if isinstance(r.get(k), (int, float))
              and (stages is None or r.get("stage") in stages)]
      cells.append(f"{sum(vals) / len(vals):14.4g}" if vals else f"{'-':>14s}")
    print(f"{name[:16]:16s} " + " ".join(cells))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
