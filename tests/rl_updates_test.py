"""Several optimizer updates per RL step (rl.mini_batches, rl.epochs): which
rows each update gets, and the parameters they lead to, against updates made
by hand on the same slices. The rollouts are memorization_test's scripted
ones (8 rows: 2 prompts x 4; 3 of them rewritten for memorization)."""

import dataclasses

import jax
import numpy as np

from memorization_test import TOK, record_updates, scripted_trainer
from rsearch_jax import testing
from rsearch_jax.rl import LossConfig, RLSettings
from rsearch_jax.rl import _train_step

LR = 1e-3


def _run(tmp_path, monkeypatch, mini_batches, epochs):
  """One RL step; returns the (batch, mem) of each update and the trainer."""
  calls = record_updates(monkeypatch)
  trainer = scripted_trainer(
      tmp_path, RLSettings(group_size=4, memorization="rule",
                           mini_batches=mini_batches, epochs=epochs,
                           loss=LossConfig(mem_coef=0.5), fit_multiple=16),
      learning_rate=LR)
  trainer.run()
  monkeypatch.undo()
  return calls, trainer


def _rows(tree, index):
  return jax.tree.map(lambda x: x[index], tree)


def _assert_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_mini_batches_and_epochs_slice_the_step_and_update_in_order(
    tmp_path, monkeypatch):
  (whole,), _ = _run(tmp_path / "one", monkeypatch, 1, 1)
  batch, mem = whole
  assert batch.tokens.shape[0] == mem.tokens.shape[0] == 8
  assert [int(mem.loss_mask[i].any()) for i in range(8)] == [1, 1, 1, 0, 0, 0, 0, 0]

  calls, trainer = _run(tmp_path / "four", monkeypatch, 2, 2)
  # Two epochs of two mini-batches: rollouts 0-3 then 4-7 (one prompt group
  # each), twice; memorization rows 0, 2, 4, 6 then 1, 3, 5, 7, so the
  # three rewrites (rows 0-2) are spread over both.
  want = [(_rows(batch, slice(0, 4)), _rows(mem, slice(0, None, 2))),
          (_rows(batch, slice(4, 8)), _rows(mem, slice(1, None, 2)))] * 2
  assert len(calls) == 4
  for (b, m), (wb, wm) in zip(calls, want):
    _assert_equal(b, wb)
    _assert_equal(m, wm)

  # The same four updates by hand, from the same initial weights, with the
  # stage's schedule counted in updates (1 step x 4).
  learner = _train_step.Learner(
      testing.tiny_model(TOK.vocab_size, layers=1),
      dataclasses.replace(trainer.optim, learning_rate=LR, warmup_steps=0,
                          total_steps=4),
      LossConfig(mem_coef=0.5))
  for b, m in want:
    learner.rl_step(b, m)
  assert trainer.learner.step == learner.step == 4
  for x, y in zip(jax.tree.leaves(trainer.learner.params),
                  jax.tree.leaves(learner.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  row = trainer.history[0]
  assert row["memorized"] == 3 and np.isfinite(row["loss"])
