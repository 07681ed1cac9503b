"""Question-answer data: JSONL readers and the deterministic prompt iterator.

The RL trainer's prompts are questions with gold answers. They come as JSONL in
R1-Searcher's format, one object per line:

  {"idx": 1, "question": "...", "answer": "Tetisheri", ...}

where `answer` is a string or a list of accepted aliases, and any other field
(`gen_text_store`, `pred_anses`, the synthetic task's `hops` / `kind` /
`internal` labels ...) is kept, untouched, in `QAExample.extra`.

Main entry points:
  QAExample                          one question with its gold answers.
  read_qa_jsonl(path)                a file -> list[QAExample], in file order; a
                                     malformed line is a ValueError naming
                                     file:line and the field.
  PromptIterator(examples, batch_size, seed)
                                     endless, deterministic batches: epoch e is
                                     a permutation drawn from (seed, e);
                                     `state()` / `restore(state)` resume a run
                                     exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from rsearch_jax._jsonl import read_objects

PathLike = str | os.PathLike

# Fields that `QAExample` holds itself; every other field goes to `extra`.
_CORE_FIELDS = ("idx", "question", "answer")


@dataclasses.dataclass(frozen=True)
class QAExample:
  """One question with its gold answers.

  Attributes:
    idx: the example's id, as a string (R1-Searcher's files store ints); the
      0-based row number when the file has no `idx` field.
    question: the question text.
    answers: the accepted gold answers (aliases), at least one, verbatim.
    extra: every other field of the JSON row, unchanged.
  """
  idx: str
  question: str
  answers: tuple[str, ...]
  extra: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

  def to_json(self) -> dict[str, Any]:
    """The row in R1-Searcher's format (a single answer stays a string)."""
    answer: str | list[str] = (
        self.answers[0] if len(self.answers) == 1 else list(self.answers))
    return {"idx": self.idx, "question": self.question, "answer": answer,
            **self.extra}


def _parse_answers(where: str, value: Any) -> tuple[str, ...]:
  if isinstance(value, str):
    return (value,)
  if isinstance(value, list):
    if not value:
      raise ValueError(f"{where}: field 'answer' is an empty list")
    for i, alias in enumerate(value):
      if not isinstance(alias, str):
        raise ValueError(f"{where}: field 'answer'[{i}] should be str, got "
                         f"{type(alias).__name__}")
    return tuple(value)
  raise ValueError(f"{where}: field 'answer' should be str or list of str, "
                   f"got {type(value).__name__}")


def parse_qa_row(row: Any, where: str, row_number: int) -> QAExample:
  """One decoded JSON row -> `QAExample`; errors are prefixed with `where`.

  Args:
    row: the decoded JSON value of one line.
    where: `file:line`, for error messages.
    row_number: 0-based position among the file's rows, the id when the row
      has no `idx`.
  """
  if not isinstance(row, dict):
    raise ValueError(f"{where}: expected a JSON object, got "
                     f"{type(row).__name__}")
  for name in ("question", "answer"):
    if name not in row:
      raise ValueError(f"{where}: missing field {name!r}")
  question = row["question"]
  if not isinstance(question, str):
    raise ValueError(f"{where}: field 'question' should be str, got "
                     f"{type(question).__name__}")
  if not question.strip():
    raise ValueError(f"{where}: field 'question' is empty")
  idx = row.get("idx", row_number)
  # bool is an int subclass; a true/false id is almost surely a broken file.
  if isinstance(idx, bool) or not isinstance(idx, (str, int)):
    raise ValueError(f"{where}: field 'idx' should be int or str, got "
                     f"{type(idx).__name__}")
  return QAExample(
      idx=str(idx),
      question=question,
      answers=_parse_answers(where, row["answer"]),
      extra={k: v for k, v in row.items() if k not in _CORE_FIELDS})


def read_qa_jsonl(path: PathLike) -> list[QAExample]:
  """Reads a question-answer JSONL file in R1-Searcher's format.

  Blank lines are skipped. Ids need not be unique (the trainer never looks
  examples up by id), and answers are kept verbatim: normalisation belongs to
  the metrics.

  Args:
    path: the `.jsonl` file.

  Returns:
    The examples, in file order.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: a line is not a JSON object, misses `question` or `answer`, or
      has a field of the wrong type; the message names `path:line` and the
      field.
  """
  return [ex for _, ex in iter_qa_rows(path)]


def iter_qa_rows(path: os.PathLike | str) -> Iterator[tuple[str, QAExample]]:
  """("path:line", QAExample) for each non-blank line of a QA JSONL file;
  errors name path:line (and the field)."""
  path = os.fspath(path)
  for n, (lineno, _, row) in enumerate(read_objects(path)):
    where = f"{path}:{lineno}"
    yield where, parse_qa_row(row, where, n)


def _fingerprint(examples: Sequence[Any]) -> str:
  """A short hash of the ids and questions (of any other item: its repr), to
  refuse restoring a position into a different dataset."""
  h = hashlib.sha256()
  for ex in examples:
    if hasattr(ex, "question"):
      key = f"{getattr(ex, 'idx', getattr(ex, 'id', ''))}\0{ex.question}"
    else:
      key = repr(ex)
    h.update(key.encode())
    h.update(b"\0")
  return h.hexdigest()[:16]


class PromptIterator:
  """Endless, deterministic batches of examples.

  Epoch `e` visits the examples in the order `permutation(seed, e)` (a NumPy
  `Generator` seeded with `[seed, e]`), or in file order with
  `shuffle=False`. The position is just `(epoch, offset)`, so a run resumed
  from `state()` yields exactly the batches an uninterrupted run would have.

  With `lengths` and `sort_window=W`, each window of W batches of that order
  is sorted by length and cut into batches, and the epoch's batches are then
  shuffled: batches of similar lengths, less padding (SFT on examples of
  very different lengths).

  With `drop_remainder=True` every batch has `batch_size` examples and the
  last `len(examples) % batch_size` examples of each epoch's order are
  skipped (a different subset each epoch when shuffled); with
  `drop_remainder=False` the last batch of an epoch may be shorter, and every
  example appears exactly once per epoch.

  Example:
    it = PromptIterator(read_qa_jsonl(path), batch_size=8, seed=0)
    batch = it.next()        # list of 8 QAExample
    saved = it.state()       # {"epoch": 0, "offset": 8, ...}, JSON-able
    it2 = PromptIterator(read_qa_jsonl(path), batch_size=8, seed=0)
    it2.restore(saved)       # it2.next() == it.next()
  """

  def __init__(self, examples: Sequence[Any], batch_size: int,
               seed: int, *, shuffle: bool = True,
               drop_remainder: bool = True,
               lengths: Sequence[int] | None = None, sort_window: int = 0):
    examples = list(examples)
    if not examples:
      raise ValueError("PromptIterator: no examples")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"PromptIterator: batch_size must be a positive int, "
                       f"got {batch_size!r}")
    if batch_size > len(examples):
      raise ValueError(f"PromptIterator: batch_size {batch_size} is larger "
                       f"than the dataset ({len(examples)} examples)")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"PromptIterator: seed must be a non-negative int, "
                       f"got {seed!r}")
    if sort_window < 0 or (sort_window and lengths is None):
      raise ValueError(f"PromptIterator: sort_window={sort_window!r} should be "
                       ">= 0, and needs lengths")
    if lengths is not None and len(lengths) != len(examples):
      raise ValueError(f"PromptIterator: {len(lengths)} lengths for "
                       f"{len(examples)} examples")
    self._lengths = None if lengths is None else np.asarray(lengths)
    self._sort_window = int(sort_window)
    self._examples = examples
    self._batch_size = int(batch_size)
    self._seed = int(seed)
    self._shuffle = shuffle
    self._drop_remainder = drop_remainder
    self._fingerprint = _fingerprint(examples)
    self._epoch = 0
    self._offset = 0
    self._order = self._epoch_order(0)

  @property
  def batch_size(self) -> int:
    return self._batch_size

  @property
  def epoch(self) -> int:
    """The epoch the next batch comes from."""
    return self._epoch

  def __len__(self) -> int:
    """Batches per epoch."""
    n, b = len(self._examples), self._batch_size
    return n // b if self._drop_remainder else -(-n // b)

  def _epoch_order(self, epoch: int) -> np.ndarray:
    """[N] int: the visiting order of epoch `epoch`."""
    n = len(self._examples)
    if not self._shuffle:
      return np.arange(n)
    rng = np.random.default_rng([self._seed, epoch])
    order = rng.permutation(n)
    if not self._sort_window:
      return order
    # Length buckets: each window of sort_window batches is sorted by length
    # and cut into batches, whose order is then shuffled. A batch is padded
    # to its longest example, so similar lengths waste less compute.
    b = self._batch_size
    window = self._sort_window * b
    batches = []
    for start in range(0, n, window):
      chunk = order[start:start + window]
      chunk = chunk[np.argsort(self._lengths[chunk], kind="stable")]
      batches += [chunk[i:i + b] for i in range(0, len(chunk), b)]
    full = [x for x in batches if len(x) == b]
    rest = [x for x in batches if len(x) < b]  # at most one per window
    full = [full[i] for i in rng.permutation(len(full))]
    return np.concatenate(full + rest) if full + rest else order

  def next(self) -> list[QAExample]:
    """The next batch (`batch_size` examples, or fewer at an epoch's end
    when `drop_remainder=False`)."""
    stop = min(self._offset + self._batch_size, len(self._examples))
    batch = [self._examples[i] for i in self._order[self._offset:stop]]
    self._offset = stop
    # Roll over now, so `state()` always points at the next batch's start.
    remaining = len(self._examples) - self._offset
    if remaining == 0 or (self._drop_remainder
                          and remaining < self._batch_size):
      self._epoch += 1
      self._offset = 0
      self._order = self._epoch_order(self._epoch)
    return batch

  def __iter__(self) -> Iterator[list[QAExample]]:
    return self

  def __next__(self) -> list[QAExample]:
    return self.next()

  def state(self) -> dict[str, Any]:
    """The position, JSON-able: `epoch` and `offset` of the next batch, plus
    what `restore` checks (seed, dataset size and fingerprint, options)."""
    return {
        "epoch": self._epoch,
        "offset": self._offset,
        "seed": self._seed,
        "batch_size": self._batch_size,
        "shuffle": self._shuffle,
        "drop_remainder": self._drop_remainder,
        "sort_window": self._sort_window,
        "num_examples": len(self._examples),
        "fingerprint": self._fingerprint,
    }

  def restore(self, state: Mapping[str, Any]) -> None:
    """Continues from a position saved by `state()`.

    Raises:
      ValueError: `state` is malformed, or was saved by an iterator over other
        data or with another seed / batch size / order options (its position
        would then mean different batches).
    """
    if not isinstance(state, Mapping):
      raise ValueError(f"PromptIterator.restore: state should be a mapping, "
                       f"got {type(state).__name__}")
    expected = self.state()
    state = {"sort_window": 0, **state}  # states saved before the option
    missing = sorted(set(expected) - set(state))
    if missing:
      raise ValueError(f"PromptIterator.restore: state misses {missing}")
    for key in ("seed", "batch_size", "shuffle", "drop_remainder",
                "sort_window", "num_examples", "fingerprint"):
      if state[key] != expected[key]:
        raise ValueError(
            f"PromptIterator.restore: state has {key}={state[key]!r} but this "
            f"iterator has {key}={expected[key]!r}")
    epoch, offset = state["epoch"], state["offset"]
    for key, value in (("epoch", epoch), ("offset", offset)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"PromptIterator.restore: {key} should be an int, "
                         f"got {value!r}")
    last = len(self._examples) - (
        self._batch_size if self._drop_remainder else 1)
    if (epoch < 0 or not 0 <= offset <= last
        or offset % self._batch_size):
      raise ValueError(
          f"PromptIterator.restore: position epoch={epoch}, offset={offset} "
          f"is not a batch start (a multiple of {self._batch_size} in "
          f"0..{last})")
    self._epoch, self._offset = int(epoch), int(offset)
    self._order = self._epoch_order(self._epoch)
