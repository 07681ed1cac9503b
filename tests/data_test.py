"""Data layer: QA JSONL readers, the deterministic prompt iterator, seqio tasks.

The shipped R1-Searcher files are checked against `json` parsing them
independently; the iterator against the properties the trainer relies on
(determinism, coverage, exact resume); the seqio tasks against the reader.
"""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
import pytest

from rsearch_jax.data._qa import PromptIterator, QAExample, read_qa_jsonl

# File (under r1_searcher/) -> rows, from ../shared/data/README.md.
SHIPPED = {
    "training_set/stage_1.jsonl": 350,
    "training_set/stage_2.jsonl": 8148,
    "eval_set/hotpotqa_500.jsonl": 500,
    "eval_set/2wiki_500.jsonl": 500,
    "eval_set/musique_500.jsonl": 500,
    "eval_set/bamboogle.jsonl": 125,
}


def _write(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def _examples(n: int) -> list[QAExample]:
  return [QAExample(str(i), f"question {i}?", (f"answer {i}",), {})
          for i in range(n)]


def _read_back(data: list[QAExample]) -> list[QAExample]:
  """A fresh copy of the examples, as a restarted process would read them."""
  return [QAExample(e.idx, e.question, e.answers, dict(e.extra)) for e in data]


def _ids(batch: list[QAExample]) -> list[str]:
  return [ex.idx for ex in batch]


# --- read_qa_jsonl -----------------------------------------------------------


@pytest.mark.parametrize("rel, rows", sorted(SHIPPED.items()))
def test_shipped_files(shared_data, rel, rows):
  path = shared_data / "r1_searcher" / rel
  examples = read_qa_jsonl(path)
  raw_lines = [l for l in path.read_text(encoding="utf-8").splitlines()
               if l.strip()]
  assert len(examples) == rows == len(raw_lines)
  for line, ex in zip(raw_lines, examples):
    raw = json.loads(line)
    assert ex.idx == str(raw["idx"])
    assert ex.question == raw["question"]
    want = raw["answer"]
    assert ex.answers == (tuple(want) if isinstance(want, list) else (want,))
    assert ex.extra == {k: v for k, v in raw.items()
                        if k not in ("idx", "question", "answer")}
  assert len({ex.idx for ex in examples}) == rows


def test_stage1_keeps_extra_fields(shared_data):
  examples = read_qa_jsonl(
      shared_data / "r1_searcher/training_set/stage_1.jsonl")
  # 10 sampled answers per question (9 in two rows).
  assert collections.Counter(len(ex.extra["pred_anses"]) for ex in examples) == {
      10: 348, 9: 2}
  # README: "some gen_text_store" (149 of the 350 rows have it).
  assert sum("gen_text_store" in ex.extra for ex in examples) == 149
  first = examples[0]
  assert (first.idx, first.question, first.answers) == (
      "37653", "Which Route 22 runs through a major city?", ("U.S. Route 22",))


def test_aliases_labels_and_defaults(tmp_path):
  path = _write(tmp_path / "qa.jsonl", [
      json.dumps({"idx": "a1", "question": "Who?",
                  "answer": ["Ann Smith", "Ann", "A. Smith"],
                  "hops": 2, "kind": "born_in", "internal": False}),
      "",  # blank lines are skipped
      json.dumps({"question": "Where? (no idx)", "answer": "Zürich"},
                 ensure_ascii=False),
      json.dumps({"idx": 7, "question": "One alias in a list?",
                  "answer": ["x"]}),
  ])
  a, b, c = read_qa_jsonl(path)
  assert a == QAExample("a1", "Who?", ("Ann Smith", "Ann", "A. Smith"),
                        {"hops": 2, "kind": "born_in", "internal": False})
  assert b == QAExample("1", "Where? (no idx)", ("Zürich",), {})
  assert c.idx == "7" and c.answers == ("x",)
  # to_json writes the format back: a re-read is the same example.
  again = read_qa_jsonl(_write(tmp_path / "again.jsonl",
                               [json.dumps(e.to_json()) for e in (a, b, c)]))
  assert again == [a, b, c]


@pytest.mark.parametrize("bad_line, field", [
    ('{"question": "q", "answer": "a"', "not valid JSON"),
    ('["q", "a"]', "expected a JSON object"),
    ('{"idx": 1, "answer": "a"}', "'question'"),
    ('{"idx": 1, "question": "q"}', "'answer'"),
    ('{"idx": 1, "question": 5, "answer": "a"}', "'question' should be str"),
    ('{"idx": 1, "question": "  ", "answer": "a"}', "'question' is empty"),
    ('{"idx": 1, "question": "q", "answer": 3}', "'answer' should be str"),
    ('{"idx": 1, "question": "q", "answer": []}', "'answer' is an empty"),
    ('{"idx": 1, "question": "q", "answer": ["a", 2]}', "'answer'[1]"),
    ('{"idx": [1], "question": "q", "answer": "a"}', "'idx' should be"),
    ('{"idx": true, "question": "q", "answer": "a"}', "'idx' should be"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, bad_line, field):
  path = _write(tmp_path / "bad.jsonl", [
      '{"idx": 0, "question": "fine", "answer": "ok"}', "", bad_line])
  with pytest.raises(ValueError) as e:
    read_qa_jsonl(path)
  assert f"{path}:3:" in str(e.value)
  assert field in str(e.value)


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError):
    read_qa_jsonl(tmp_path / "nope.jsonl")


# --- PromptIterator ----------------------------------------------------------


def test_same_seed_same_batches_other_seed_other_batches():
  data = _examples(50)
  take = lambda it, k: [_ids(it.next()) for _ in range(k)]
  a = take(PromptIterator(data, 8, seed=3), 20)
  b = take(PromptIterator(list(data), 8, seed=3), 20)
  c = take(PromptIterator(data, 8, seed=4), 20)
  assert a == b
  assert a != c
  # Epochs are reshuffled: epoch 1's order is not epoch 0's.
  assert a[:6] != a[6:12]


@pytest.mark.parametrize("n, batch, drop", [
    (12, 4, True), (12, 4, False), (10, 3, False), (10, 3, True), (7, 7, True)])
def test_each_example_once_per_epoch(n, batch, drop):
  data = _examples(n)
  it = PromptIterator(data, batch, seed=0, drop_remainder=drop)
  per_epoch = n // batch if drop else -(-n // batch)
  assert len(it) == per_epoch
  for epoch in range(3):
    assert it.epoch == epoch
    batches = [it.next() for _ in range(per_epoch)]
    sizes = [len(b) for b in batches]
    seen = collections.Counter(ex.idx for b in batches for ex in b)
    assert max(seen.values()) == 1
    if drop:
      assert sizes == [batch] * per_epoch
      assert len(seen) == n - n % batch
    else:
      assert sizes == [batch] * (n // batch) + ([n % batch] if n % batch else [])
      assert set(seen) == {ex.idx for ex in data}
  assert it.epoch == 3


def test_no_shuffle_is_file_order():
  data = _examples(10)
  it = PromptIterator(data, 4, seed=123, shuffle=False, drop_remainder=False)
  got = [_ids(it.next()) for _ in range(4)]
  assert got == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"],
                 ["0", "1", "2", "3"]]


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("stop_after", [0, 1, 3, 4, 5, 9])
def test_resume_continues_exactly(drop, stop_after):
  data = _examples(17)  # 4 full batches of 4 + 1 left over per epoch
  whole = PromptIterator(data, 4, seed=11, drop_remainder=drop)
  expected = [_ids(whole.next()) for _ in range(12)]

  first = PromptIterator(data, 4, seed=11, drop_remainder=drop)
  got = [_ids(first.next()) for _ in range(stop_after)]
  saved = json.loads(json.dumps(first.state()))  # as a checkpoint stores it
  resumed = PromptIterator(_read_back(data), 4, seed=11, drop_remainder=drop)
  resumed.restore(saved)
  got += [_ids(resumed.next()) for _ in range(12 - stop_after)]
  assert got == expected


def test_state_is_position():
  it = PromptIterator(_examples(10), 4, seed=0)
  assert (it.state()["epoch"], it.state()["offset"]) == (0, 0)
  it.next()
  assert (it.state()["epoch"], it.state()["offset"]) == (0, 4)
  it.next()  # 2 examples left < batch: the epoch is over
  assert (it.state()["epoch"], it.state()["offset"]) == (1, 0)


def test_restore_refuses_other_runs():
  data = _examples(20)
  saved = PromptIterator(data, 4, seed=1).state()
  with pytest.raises(ValueError, match="seed"):
    PromptIterator(data, 4, seed=2).restore(saved)
  with pytest.raises(ValueError, match="batch_size"):
    PromptIterator(data, 5, seed=1).restore(saved)
  other = data[:-1] + [QAExample("x", "another question", ("a",), {})]
  with pytest.raises(ValueError, match="fingerprint"):
    PromptIterator(other, 4, seed=1).restore(saved)
  with pytest.raises(ValueError, match="num_examples"):
    PromptIterator(data[:16], 4, seed=1).restore(saved)
  it = PromptIterator(data, 4, seed=1)
  with pytest.raises(ValueError, match="not a batch start"):
    it.restore({**saved, "offset": 3})
  with pytest.raises(ValueError, match="not a batch start"):
    it.restore({**saved, "offset": 20})
  with pytest.raises(ValueError, match="misses"):
    it.restore({"epoch": 0, "offset": 0})


def test_bad_arguments():
  with pytest.raises(ValueError, match="larger than the dataset"):
    PromptIterator(_examples(5), 6, seed=0)
  with pytest.raises(ValueError, match="larger than the dataset"):
    PromptIterator(_examples(5), 6, seed=0, drop_remainder=False)
  with pytest.raises(ValueError, match="positive"):
    PromptIterator(_examples(5), 0, seed=0)
  with pytest.raises(ValueError, match="no examples"):
    PromptIterator([], 1, seed=0)


# --- seqio tasks -------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks():
  """The seqio module (imports seqio + TensorFlow once for this file)."""
  from rsearch_jax.data import _tasks  # noqa: PLC0415
  _tasks._seqio()
  return _tasks


def test_r1_tasks_registered_idempotently(tasks, shared_data):
  import seqio  # noqa: PLC0415
  root = shared_data / "r1_searcher"
  names = tasks.register_qa_tasks(root)
  assert names == ["r1_stage1", "r1_stage2", "r1_eval_hotpotqa",
                   "r1_eval_2wiki", "r1_eval_musique", "r1_eval_bamboogle"]
  first = {n: seqio.TaskRegistry.get(n) for n in names}
  assert tasks.register_qa_tasks(str(root)) == names
  assert all(seqio.TaskRegistry.get(n) is first[n] for n in names)
  assert tuple(first["r1_stage2"].splits) == ("train",)
  assert tuple(first["r1_eval_musique"].splits) == ("test",)


@pytest.mark.parametrize("task, rel", [
    ("r1_stage1", "training_set/stage_1.jsonl"),
    ("r1_eval_bamboogle", "eval_set/bamboogle.jsonl"),
])
def test_load_task_examples_equals_reader(tasks, shared_data, task, rel):
  tasks.register_qa_tasks(shared_data / "r1_searcher")
  got = tasks.load_task_examples(task)
  assert got == read_qa_jsonl(shared_data / "r1_searcher" / rel)
  assert len(got) == SHIPPED[rel]


@pytest.mark.parametrize("name, task", [
    ("bamboogle.jsonl", "r1_eval_bamboogle"),
    ("hotpotqa_500.jsonl", "r1_eval_hotpotqa"),
    ("2wiki_500.jsonl", "r1_eval_2wiki"),
    ("musique_500.jsonl", "r1_eval_musique"),
])
def test_an_r1_eval_file_loads_through_its_task(tasks, shared_data, monkeypatch,
                                                name, task):
  root = shared_data / "r1_searcher"
  path = root / "eval_set" / name
  loaded = []
  load = tasks.load_task_examples
  monkeypatch.setattr(tasks, "load_task_examples",
                      lambda *a: loaded.append(a) or load(*a))
  assert tasks.eval_task_for(path, root) == task
  got = tasks.load_qa_file(path, root)
  assert loaded == [(task,)]  # through the seqio Task ...
  assert got == read_qa_jsonl(path)  # ... the reader's rows, in order
  assert len(got) == SHIPPED[f"eval_set/{name}"]


def test_another_file_loads_with_the_reader(tasks, shared_data, tmp_path,
                                            monkeypatch):
  root = shared_data / "r1_searcher"
  monkeypatch.setattr(tasks, "load_task_examples",
                      lambda *a: pytest.fail(f"read through a task: {a}"))
  # Not an eval set: a training file, and a copy of an eval set elsewhere.
  copy = tmp_path / "bamboogle.jsonl"
  copy.write_bytes((root / "eval_set" / "bamboogle.jsonl").read_bytes())
  for path in (root / "training_set" / "stage_1.jsonl", copy):
    assert tasks.eval_task_for(path, root) is None
    assert tasks.load_qa_file(path, root) == read_qa_jsonl(path)
  # Without the data folder, nothing is registered either.
  assert tasks.load_qa_file(copy, tmp_path / "no_such_dir") == read_qa_jsonl(copy)


def test_jsonl_task_aliases_and_splits(tasks, tmp_path):
  train = _write(tmp_path / "train.jsonl", [
      json.dumps({"idx": 0, "question": "Who directed X?",
                  "answer": ["Ann Smith", "Ann", "Ann, the elder"],
                  "hops": 2, "internal": True}),
      json.dumps({"idx": 1, "question": "Où est Zürich?", "answer": "Suisse"},
                 ensure_ascii=False),
  ])
  heldout = _write(tmp_path / "heldout.jsonl", [
      json.dumps({"idx": 9, "question": "q?", "answer": ["a", "b"]})])
  tasks.register_jsonl_task("data_test_synth",
                            {"train": train, "heldout": heldout})
  assert tasks.load_task_examples("data_test_synth", "train") == (
      read_qa_jsonl(train))
  assert tasks.load_task_examples("data_test_synth", "heldout") == [
      QAExample("9", "q?", ("a", "b"), {})]
  with pytest.raises(ValueError, match="pass one as split"):
    tasks.load_task_examples("data_test_synth")
  with pytest.raises(ValueError, match=r"no split 'test'.*'heldout'"):
    tasks.load_task_examples("data_test_synth", "test")

  # The same name over another file replaces the task.
  tasks.register_jsonl_task("data_test_synth", heldout)
  assert [e.idx for e in tasks.load_task_examples("data_test_synth")] == ["9"]


def test_task_errors(tasks, tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    tasks.register_jsonl_task("data_test_missing", tmp_path / "missing.jsonl")
  with pytest.raises(FileNotFoundError, match="data folder not found"):
    tasks.register_qa_tasks(tmp_path / "no_such_dir")
  with pytest.raises(ValueError, match="not registered"):
    tasks.load_task_examples("data_test_never_registered")
  # A malformed file fails when the task is read, with file:line.
  bad = _write(tmp_path / "bad.jsonl", ['{"idx": 0, "question": "q"}'])
  tasks.register_jsonl_task("data_test_bad", bad)
  with pytest.raises(ValueError, match=rf"{bad}:1: missing field 'answer'"):
    tasks.load_task_examples("data_test_bad")


def test_foreign_task_name_is_refused(tasks, tmp_path):
  import seqio  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415
  if "data_test_foreign" not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        "data_test_foreign",
        source=seqio.FunctionDataSource(
            lambda split, shuffle_files: tf.data.Dataset.range(1),
            splits=("train",)),
        output_features={})
  path = _write(tmp_path / "ok.jsonl", ['{"question": "q", "answer": "a"}'])
  with pytest.raises(ValueError, match="already registered by other code"):
    tasks.register_jsonl_task("data_test_foreign", path)


@pytest.mark.parametrize("n, drop", [(103, True), (103, False), (96, True)])
def test_sort_window_batches_similar_lengths(n, drop):
  """Length buckets: each epoch still visits every example once (less the
  dropped remainder); each batch is a run of one window sorted by length; and
  the padding (rows x longest example, summed over batches) falls."""
  data = _examples(n)
  lengths = np.random.default_rng(5).integers(10, 400, n)
  length = {ex.idx: int(l) for ex, l in zip(data, lengths)}
  it = PromptIterator(data, 4, seed=2, drop_remainder=drop, lengths=lengths,
                      sort_window=5)
  plain = PromptIterator(data, 4, seed=2, drop_remainder=drop)
  for _ in range(2):
    batches = [it.next() for _ in range(len(it))]
    seen = collections.Counter(ex.idx for b in batches for ex in b)
    assert max(seen.values()) == 1
    assert len(seen) == (n - n % 4 if drop else n)
    # The window's permutation, sorted: an independent reference.
    epoch_order = np.random.default_rng([2, it.epoch - 1]).permutation(n)
    windows = [epoch_order[i:i + 20] for i in range(0, n, 20)]
    for b in batches:
      ids = [int(ex.idx) for ex in b]
      w = next(w for w in windows if ids[0] in w)
      ranked = sorted(w, key=lambda i: (lengths[i], list(w).index(i)))
      start = ranked.index(ids[0])
      assert ids == ranked[start:start + len(ids)]
      assert [length[ex.idx] for ex in b] == sorted(length[ex.idx] for ex in b)
    padded = sum(len(b) * max(length[ex.idx] for ex in b) for b in batches)
    plain_batches = [plain.next() for _ in range(len(plain))]
    plain_padded = sum(len(b) * max(length[ex.idx] for ex in b)
                       for b in plain_batches)
    assert padded < 0.85 * plain_padded
  # Resumes exactly, and a state saved without the option still restores.
  first = PromptIterator(data, 4, seed=2, lengths=lengths, sort_window=5)
  expected = [_ids(first.next()) for _ in range(40)]
  again = PromptIterator(data, 4, seed=2, lengths=lengths, sort_window=5)
  got = [_ids(again.next()) for _ in range(7)]
  resumed = PromptIterator(data, 4, seed=2, lengths=lengths, sort_window=5)
  resumed.restore(json.loads(json.dumps(again.state())))
  assert got + [_ids(resumed.next()) for _ in range(33)] == expected
  old = PromptIterator(data, 4, seed=2).state()
  old.pop("sort_window")
  PromptIterator(data, 4, seed=2).restore(old)
  with pytest.raises(ValueError, match="sort_window"):
    PromptIterator(data, 4, seed=2, sort_window=2)
  with pytest.raises(ValueError, match="sort_window"):
    first.restore(PromptIterator(data, 4, seed=2).state())
