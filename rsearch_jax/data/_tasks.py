"""seqio Tasks over question-answer JSONL files.

Each Task's source reads a JSONL file in R1-Searcher's format with
`read_qa_jsonl` (so a malformed line is the same file:line ValueError) and
yields one example per row, in file order, with string features:

  idx       []  the example id.
  question  []  the question.
  answers   [A] the gold aliases, one string each (a variable-length vector,
                so no separator can clash with an answer's text).
  extra     []  the row's other fields as a JSON object (`{}` when none), so
                materialising a Task loses nothing (`gen_text_store`, the
                synthetic task's `hops` / `kind` / `internal` labels ...).

No vocabulary is involved: the features use `seqio.PassThroughVocabulary`, the
trainer tokenizes prompts itself.

seqio and TensorFlow take ~10 s to import, so they are imported on first use
inside the functions below, never when this module is imported.

Main entry points:
  register_qa_tasks(data_dir)        R1-Searcher's training and eval sets:
                                     r1_stage1, r1_stage2 (split "train"),
                                     r1_eval_hotpotqa, r1_eval_2wiki,
                                     r1_eval_musique, r1_eval_bamboogle
                                     (split "test").
  register_jsonl_task(name, paths)   any JSONL file(s) in that format.
  load_task_examples(name, split)    a Task's split -> list[QAExample], in
                                     file order.
  load_qa_file(path, data_dir)       a QA JSONL file's examples: through its
                                     eval Task when it is one of R1-Searcher's
                                     four eval sets, else `read_qa_jsonl`
                                     (`eval_task_for` names that Task).
  register_synthetic_task(splits, data_dir)
                                     the synthetic world's splits written as
                                     JSONL, one Task "synthetic_<digest>".
  load_synthetic_questions(name, split)
                                     a split of it -> the world's Questions.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

from rsearch_jax.data import synthetic
from rsearch_jax.data._qa import QAExample, read_qa_jsonl

PathLike = str | os.PathLike

DEFAULT_DATA_DIR = "../shared/data/r1_searcher"

# Task name -> (split, file relative to the R1-Searcher data folder).
R1_TASKS: dict[str, tuple[str, str]] = {
    "r1_stage1": ("train", "training_set/stage_1.jsonl"),
    "r1_stage2": ("train", "training_set/stage_2.jsonl"),
    "r1_eval_hotpotqa": ("test", "eval_set/hotpotqa_500.jsonl"),
    "r1_eval_2wiki": ("test", "eval_set/2wiki_500.jsonl"),
    "r1_eval_musique": ("test", "eval_set/musique_500.jsonl"),
    "r1_eval_bamboogle": ("test", "eval_set/bamboogle.jsonl"),
}

FEATURES = ("idx", "question", "answers", "extra")

# Marks the sources this module made, with their split -> path mapping, so
# re-registration can tell "same task again" (a no-op) from a name clash.
_PATHS_ATTR = "_rsearch_qa_paths"


def _seqio():
  """(seqio, tensorflow), imported on first use (they are slow to import)."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return seqio, tf


def _output_features() -> dict[str, Any]:
  seqio, tf = _seqio()
  vocab = seqio.PassThroughVocabulary(size=0)
  return {
      name: seqio.Feature(vocab, add_eos=False, dtype=tf.string,
                          rank=1 if name == "answers" else 0)
      for name in FEATURES
  }


def _examples_dataset(examples: list[QAExample]):
  """A `tf.data.Dataset` of the examples' features, in order."""
  _, tf = _seqio()
  answers = tf.RaggedTensor.from_row_lengths(
      tf.constant([a for ex in examples for a in ex.answers], tf.string),
      tf.constant([len(ex.answers) for ex in examples], tf.int64))
  return tf.data.Dataset.from_tensor_slices({
      "idx": tf.constant([ex.idx for ex in examples], tf.string),
      "question": tf.constant([ex.question for ex in examples], tf.string),
      "answers": answers,
      "extra": tf.constant(
          [json.dumps(ex.extra, ensure_ascii=False) for ex in examples],
          tf.string),
  })


def _make_source(paths: Mapping[str, str]):
  seqio, _ = _seqio()

  def dataset_fn(split, shuffle_files, seed=None):
    # One file per split: there are no files to shuffle, and seqio's Task
    # shuffles examples itself when asked to.
    del shuffle_files, seed
    return _examples_dataset(read_qa_jsonl(paths[split]))

  source = seqio.FunctionDataSource(dataset_fn, splits=tuple(paths))
  setattr(source, _PATHS_ATTR, dict(paths))
  return source


def register_jsonl_task(name: str,
                        paths: PathLike | Mapping[str, PathLike]) -> Any:
  """Registers (idempotently) a seqio Task over question-answer JSONL files.

  Registering the same name with the same files again returns the existing
  Task; with other files, it replaces the Task this module registered before
  (a run's config decides where the data is).

  Args:
    name: the Task name (letters, digits, `_ . : #`).
    paths: one file (split "train"), or a mapping split -> file.

  Returns:
    The `seqio.Task`.

  Raises:
    FileNotFoundError: a file does not exist.
    ValueError: `name` belongs to a Task not registered by this module.
  """
  seqio, _ = _seqio()
  if isinstance(paths, (str, os.PathLike)):
    paths = {"train": paths}
  if not paths:
    raise ValueError(f"register_jsonl_task({name!r}): no files given")
  resolved = {}
  for split, path in paths.items():
    path = pathlib.Path(path).resolve()
    if not path.is_file():
      raise FileNotFoundError(
          f"task {name!r}, split {split!r}: no such file {path}")
    resolved[str(split)] = str(path)

  if name in seqio.TaskRegistry.names():
    existing = seqio.TaskRegistry.get(name)
    old_paths = getattr(existing.source, _PATHS_ATTR, None)
    if old_paths is None:
      raise ValueError(f"seqio task {name!r} is already registered by other "
                       f"code; pick another name")
    if old_paths == resolved:
      return existing
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=_make_source(resolved), output_features=_output_features())


def register_qa_tasks(data_dir: PathLike = DEFAULT_DATA_DIR) -> list[str]:
  """Registers (idempotently) the R1-Searcher tasks of `R1_TASKS`.

  Args:
    data_dir: the folder holding `training_set/` and `eval_set/` (relative
      paths are taken from the current directory).

  Returns:
    The registered task names.

  Raises:
    FileNotFoundError: `data_dir` or one of its files is missing.
  """
  root = pathlib.Path(data_dir)
  if not root.is_dir():
    raise FileNotFoundError(
        f"R1-Searcher data folder not found: {root.resolve()} (expected "
        f"training_set/ and eval_set/ from ../shared/data/r1_searcher)")
  for name, (split, rel) in R1_TASKS.items():
    register_jsonl_task(name, {split: root / rel})
  return list(R1_TASKS)


def load_task_examples(task_name: str,
                       split: str | None = None) -> list[QAExample]:
  """Materialises a registered Task's split as `QAExample`s, in file order.

  Args:
    task_name: a Task registered by this module (or any seqio Task with the
      `idx` / `question` / `answers` features; `extra` is optional).
    split: the split; None takes the Task's only split (R1-Searcher's
      training tasks have "train", its eval tasks "test").

  Returns:
    The examples; equal to `read_qa_jsonl` of the Task's file.

  Raises:
    ValueError: the Task is not registered, or has no such split (the message
      lists the ones it has).
  """
  seqio, _ = _seqio()
  if task_name not in seqio.TaskRegistry.names():
    raise ValueError(f"seqio task {task_name!r} is not registered (call "
                     f"register_qa_tasks or register_jsonl_task first)")
  task = seqio.TaskRegistry.get(task_name)
  splits = tuple(task.splits)
  if split is None:
    if len(splits) != 1:
      raise ValueError(f"task {task_name!r} has splits {list(splits)}; "
                       f"pass one as split=")
    split = splits[0]
  if split not in splits:
    raise ValueError(f"task {task_name!r} has no split {split!r} (it has "
                     f"{list(splits)})")
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False,
                        num_epochs=1)
  examples = []
  for row in ds.as_numpy_iterator():
    extra = row.get("extra")
    examples.append(QAExample(
        idx=row["idx"].decode(),
        question=row["question"].decode(),
        answers=tuple(a.decode() for a in row["answers"]),
        extra=json.loads(extra.decode()) if extra is not None else {}))
  return examples


def eval_task_for(path: PathLike,
                  data_dir: PathLike = DEFAULT_DATA_DIR) -> str | None:
  """The name of R1-Searcher's eval Task (`R1_TASKS`, split "test") whose
  file under `data_dir` is `path`, or None."""
  path = pathlib.Path(path).resolve()
  root = pathlib.Path(data_dir)
  for name, (split, rel) in R1_TASKS.items():
    if split == "test" and (root / rel).resolve() == path:
      return name
  return None


def load_qa_file(path: PathLike,
                 data_dir: PathLike = DEFAULT_DATA_DIR) -> list[QAExample]:
  """A question-answer JSONL file's examples, in file order: read through
  its seqio Task (registering R1-Searcher's tasks from `data_dir`) when it is
  one of R1-Searcher's four eval sets there, else with `read_qa_jsonl`.
  Either way the same examples."""
  name = eval_task_for(path, data_dir)
  if name is None:
    return read_qa_jsonl(path)
  register_qa_tasks(data_dir)
  return load_task_examples(name)


def register_synthetic_task(splits: Mapping[str, Sequence[synthetic.Question]],
                            data_dir: PathLike) -> str:
  """Writes the synthetic world's splits and registers them as one Task.

  Each split goes to `data_dir/synthetic_{split}.jsonl` (`synthetic.
  write_jsonl`: R1-Searcher's fields plus the labels), and the Task, one
  split per file, is named "synthetic_" + a digest of the files, so another
  world (or seed) is another Task.

  Args:
    splits: split name -> `synthetic.Question`s (e.g. `make_splits`' dict).
    data_dir: the folder for the files (created if missing).

  Returns:
    The Task name.
  """
  data_dir = pathlib.Path(data_dir)
  data_dir.mkdir(parents=True, exist_ok=True)
  digest = hashlib.sha256()
  paths = {}
  for split, questions in splits.items():
    path = data_dir / f"synthetic_{split}.jsonl"
    synthetic.write_jsonl(questions, path)
    digest.update(f"{split}\0".encode() + path.read_bytes() + b"\0")
    paths[split] = path
  name = f"synthetic_{digest.hexdigest()[:12]}"
  register_jsonl_task(name, paths)
  return name


def load_synthetic_questions(task_name: str,
                             split: str) -> list[synthetic.Question]:
  """A split of `register_synthetic_task`'s Task as `synthetic.Question`s
  (ids, texts, answers and labels as written), in order."""
  return [synthetic.question_from_example(
              ex, f"seqio task {task_name!r}, split {split!r}, row {i}")
          for i, ex in enumerate(load_task_examples(task_name, split))]
