"""The curriculum trainer's evaluation rows across a stop and a resume: each
stage's held-out row survives in the run's summary whether the run stopped
after the stage's last checkpoint or was branched from it."""

import jax
import numpy as np
import pytest
from flax import nnx

from rsearch_jax import testing
from rsearch_jax.rl import RLSettings, Stage, Trainer

TOK = testing.CharTokenizer()
# SFT examples: (prompt, [(text, retrieved)]): the loss is on the policy's text.
EXAMPLES = [(f"q{i}?", [(f" a{i}.", False)]) for i in range(8)]
STAGES = [Stage("a", "sft", 3, "texts", 2, learning_rate=1e-2),
          Stage("b", "sft", 2, "texts", 2, learning_rate=1e-2)]


class Crash(RuntimeError):
  pass


def _trainer(workdir, stages, eval_fn):
  return Trainer(model=testing.tiny_model(TOK.vocab_size, layers=1),
                 tokenizer=TOK, make_sampler=None, tags=None, reward_tags=None,
                 stages=stages, datasets={"texts": EXAMPLES}, prompt_fn=None,
                 rl=RLSettings(), workdir=str(workdir), eval_fn=eval_fn,
                 checkpoint_every=100, tensorboard=False, seq_len=32)


def _recording(calls, crash_at=None):
  def eval_fn(trainer, after):
    calls.append(after)
    if after == crash_at:
      raise Crash(after)
    # A fingerprint of the parameters evaluated.
    params = nnx.state(trainer.current_model(), nnx.Param)
    return {"params": float(sum(np.abs(np.asarray(x)).sum()
                                for x in jax.tree.leaves(params)))}
  return eval_fn


def _rows(rows):
  return [(r["after"], r["params"]) for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  return _rows(_trainer(tmp_path_factory.mktemp("whole"), STAGES,
                        _recording([])).run())


def test_a_run_stopped_in_the_next_stage_keeps_the_finished_stages_row(
    tmp_path, uninterrupted):
  calls = []
  with pytest.raises(Crash):  # stops in stage b, after stage a's checkpoint
    _trainer(tmp_path, STAGES, _recording(calls, crash_at="b")).run()
  assert calls == ["start", "a", "b"]
  calls.clear()
  rows = _trainer(tmp_path, STAGES, _recording(calls)).run()
  # Stage a's row comes from its checkpoint, not from a second evaluation.
  assert calls == ["b"]
  assert [a for a, _ in uninterrupted] == ["start", "a", "b"]
  assert len({p for _, p in uninterrupted}) == 3  # each stage moved them
  np.testing.assert_allclose([p for _, p in _rows(rows)],
                             [p for _, p in uninterrupted], rtol=1e-6)
  summary = (tmp_path / "summary.md").read_text()
  assert [line.split("|")[1].strip() for line in summary.splitlines()[2:]] == [
      "start", "a", "b"]


def test_a_branch_from_a_checkpoint_without_the_stages_row_evaluates_it(
    tmp_path, uninterrupted):
  # Stage a run alone without evaluation: its checkpoint holds no row.
  _trainer(tmp_path, STAGES[:1], None).run()
  calls = []
  rows = _trainer(tmp_path, STAGES, _recording(calls)).run()
  # Evaluated on resume, with stage a's parameters, before b.
  assert calls == ["a", "b"]
  np.testing.assert_allclose([p for _, p in _rows(rows)],
                             [p for _, p in uninterrupted[1:]], rtol=1e-6)


def test_eval_every_adds_rows_within_a_stage_that_survive_a_resume(
    tmp_path, uninterrupted):
  every = lambda workdir, fn: Trainer(
      model=testing.tiny_model(TOK.vocab_size, layers=1), tokenizer=TOK,
      make_sampler=None, tags=None, reward_tags=None, stages=STAGES,
      datasets={"texts": EXAMPLES}, prompt_fn=None, rl=RLSettings(),
      workdir=str(workdir), eval_fn=fn, eval_every=2, checkpoint_every=2,
      tensorboard=False, seq_len=32)
  calls = []
  with pytest.raises(Crash):  # after the row "a@2" and its step's checkpoint
    every(tmp_path, _recording(calls, crash_at="a")).run()
  assert calls == ["start", "a@2", "a"]
  calls.clear()
  rows = _rows(every(tmp_path, _recording(calls)).run())
  # Stage b's second step is its last: its row is "b", not "b@2".
  assert calls == ["a", "b"]
  assert [a for a, _ in rows] == ["start", "a@2", "a", "b"]
  # The stage-end rows are the run's without eval_every; "a@2" lies between.
  np.testing.assert_allclose([p for a, p in rows if "@" not in a],
                             [p for _, p in uninterrupted], rtol=1e-6)
  assert len({p for _, p in rows}) == 4
  assert (tmp_path / "eval_curves.png").stat().st_size > 0
  with pytest.raises(ValueError, match="eval_every=-1"):
    Trainer(model=None, tokenizer=TOK, make_sampler=None, tags=None,
            reward_tags=None, stages=STAGES, datasets={"texts": EXAMPLES},
            prompt_fn=None, rl=RLSettings(), workdir=str(tmp_path),
            eval_every=-1)


class _Sampled(Exception):
  pass


@pytest.mark.parametrize("corpora", [("renamed-3", "", "renamed-5"), ("", "", "")],
                         ids=["routed", "default"])
def test_an_rl_step_hands_each_rollout_its_questions_corpus(tmp_path, corpora):
  """Each of a group's rollouts searches its question's corpus; a batch
  whose questions all search the default corpus does not pass `corpora`
  (a sampler of one corpus need not take it)."""
  from rsearch_jax.data.synthetic import Question
  questions = [Question(id=str(i), question=f"q{i}?", answers=("a",), hops=2,
                        kind="2hop", internal=False, facts=(), entities=(),
                        corpus=c) for i, c in enumerate(corpora)]
  calls = []

  def sampler(prompts, seed=0, **routed):
    calls.append((list(prompts), routed.get("corpora", "not passed")))
    raise _Sampled

  trainer = Trainer(model=testing.tiny_model(TOK.vocab_size, layers=1),
                    tokenizer=TOK, make_sampler=lambda model: sampler, tags=None,
                    reward_tags=None,
                    stages=[Stage("rl", "rl", 1, "qs", 3, rewards=("f1",),
                                  learning_rate=1e-3)],
                    datasets={"qs": questions}, prompt_fn=lambda q: q + "\n",
                    rl=RLSettings(group_size=2), workdir=str(tmp_path),
                    checkpoint_every=100, tensorboard=False, seq_len=32)
  with pytest.raises(_Sampled):
    trainer.run()
  [(prompts, got)] = calls
  want = {f"q{i}?\n": c for i, c in enumerate(corpora)}
  if any(corpora):
    assert got == [want[p] for p in prompts]
    assert sorted(got) == sorted(c for c in corpora for _ in range(2))
  else:
    assert got == "not passed" and len(prompts) == 6
