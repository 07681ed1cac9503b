"""Command-line plumbing shared by the `launch/` scripts.

Main entry point: `parse_flags(argv)`, given to `absl.app.run` as its
`flags_parser`, so that a misspelled or ill-typed `--config.<field>=...`
override ends the run with one clear line instead of a traceback from inside
ml_collections.
"""

from __future__ import annotations

import sys

from absl import flags


def _clean(message: str) -> str:
  """ml_collections wraps its messages in a repr: unwrap them."""
  if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
    message = message[1:-1]
  return " ".join(message.replace("\\n", " ").replace("\\'", "'").split())


def parse_flags(argv: list[str]) -> list[str]:
  """Parses absl flags; bad flags or config overrides exit with a message."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {_clean(str(e))}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    overrides = " ".join(a for a in argv[1:] if a.startswith("--config."))
    sys.exit(f"error: a --config override does not fit the config: "
             f"{_clean(str(e))}\n  (overrides given: {overrides or 'none'})")


def exit_on_invalid(validate, cfg) -> None:
  """Runs `validate(cfg)`; a ValueError ends the run with its message."""
  try:
    validate(cfg)
  except ValueError as e:
    sys.exit(f"error: {e}")
