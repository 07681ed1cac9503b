"""One reader for every JSONL file the library reads (QA sets, corpora,
predictions, metrics): blank lines skipped, errors named `path:line`.

Main entry point: `read_objects(path, drop_cut_end=False)`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator


def read_objects(path: os.PathLike | str, *, drop_cut_end: bool = False
                 ) -> Iterator[tuple[int, str, dict[str, Any]]]:
  """(line number, line text, decoded object) for each non-blank line.

  Args:
    path: the file (utf-8; a BOM written by some editors is ignored).
    drop_cut_end: files we append to ourselves (predictions, metrics) write
      each record with its newline in one go, so a last line without one is
      a write cut by a crash: it is skipped instead of read.

  Raises:
    ValueError: a line that is not valid JSON or not a JSON object, naming
      `path:line`.
  """
  with open(path, encoding="utf-8-sig") as f:
    for lineno, line in enumerate(f, 1):
      if drop_cut_end and not line.endswith("\n"):
        return
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got "
                         f"{type(row).__name__}")
      yield lineno, line, row
