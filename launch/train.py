"""Runs a training curriculum from a config (pretrain / SFT / RL stages).

    python launch/train.py --config=configs/r1pp.py            # the CPU demo
    python launch/train.py --config=configs/r1.py:demo
    python launch/train.py --config=configs/r1pp.py --config.rl.loss.kl_coef=0.001

Everything the run writes goes to --config.workdir: checkpoints (a rerun of the
same command resumes from the latest), metrics.jsonl, TensorBoard events,
sample traces, curves.png and the summary table.
"""

import pathlib
import sys

from absl import app, logging
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from rsearch_jax import cli, experiment  # noqa: E402
from rsearch_jax.checkpoint import CheckpointError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py[:preset]")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes
  cfg = _CONFIG.value
  if cfg is None:
    raise app.UsageError("--config is required, e.g. --config=configs/r1pp.py")
  cli.exit_on_invalid(experiment.validate, cfg)
  trainer = experiment.build_trainer(cfg)
  try:
    trainer.run()
  except CheckpointError as e:  # e.g. resumed under a changed config
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
