"""The optimizer: the learning-rate schedule and AdamW with global-norm
clipping against hand-written NumPy arithmetic, and the config's `optim.*`
fields reaching every stage's optimizer."""

import importlib.util
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rsearch_jax import experiment, models
from rsearch_jax.rl import (OptimConfig, RLSettings, Stage, Trainer,
                            make_optimizer, make_schedule)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _np_lr(step, peak, warmup, total, alpha, schedule="cosine"):
  """Linear warmup from 0 to `peak`, then cosine from `peak` down to
  alpha * peak over the remaining total - warmup steps (then flat), or flat."""
  if step < warmup:
    return peak * step / warmup
  if schedule == "constant":
    return peak
  t = min(step - warmup, total - warmup) / (total - warmup)
  return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * t)) + alpha)


@pytest.mark.parametrize("warmup,total,alpha,schedule", [
    (10, 100, 0.1, "cosine"), (0, 40, 0.0, "cosine"), (5, 20, 0.5, "cosine"),
    (4, 30, 0.1, "constant")])
def test_schedule_matches_warmup_then_cosine(warmup, total, alpha, schedule):
  cfg = OptimConfig(learning_rate=3e-3, warmup_steps=warmup, total_steps=total,
                    min_lr_ratio=alpha, schedule=schedule)
  lr = make_schedule(cfg)
  steps = sorted({0, 1, max(warmup - 1, 0), warmup, warmup + 1,
                  (warmup + total) // 2, total - 1, total, total + 7})
  for step in steps:
    want = _np_lr(step, 3e-3, warmup, total, alpha, schedule)
    # float32: absolute error ~1e-6 of the peak where the rate nears 0.
    np.testing.assert_allclose(float(lr(step)), want, rtol=1e-5, atol=3e-9,
                               err_msg=f"step {step}")
  # Spot values by hand: half-way through the cosine the rate is the mean of
  # the peak and the floor; at the end it is the floor.
  if schedule == "cosine":
    mid = warmup + (total - warmup) / 2
    if float(mid).is_integer():
      np.testing.assert_allclose(float(lr(int(mid))), 3e-3 * (1 + alpha) / 2,
                                 rtol=1e-5)
    np.testing.assert_allclose(float(lr(total)), 3e-3 * alpha, rtol=1e-5,
                               atol=1e-12)


def _np_adamw(params, grads_seq, lrs, b1, b2, eps, wd, clip):
  """AdamW (decoupled decay, bias-corrected moments) on clipped gradients,
  with learning rate lrs[t - 1] at update t."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, (grads, lr) in enumerate(zip(grads_seq, lrs), start=1):
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum())
                         for g in grads.values()))
    scale = clip / norm if clip > 0 and norm > clip else 1.0
    for k in p:
      g = grads[k].astype(np.float64) * scale
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
      p[k] = p[k] - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * p[k])
  return p


def _apply(tx, params, grads_seq):
  params = {k: jnp.asarray(v) for k, v in params.items()}
  state = tx.init(params)
  for grads in grads_seq:
    updates, state = tx.update({k: jnp.asarray(g) for k, g in grads.items()},
                               state, params)
    params = {k: params[k] + updates[k] for k in params}
  return {k: np.asarray(v) for k, v in params.items()}


# A huge first gradient (global norm 5e6 over two leaves), then one below the
# clip threshold, which passes unchanged.
PARAMS = {"a": np.array([0.5, -1.0, 2.0], np.float32),
          "b": np.array([[1.5], [-0.25]], np.float32)}
HUGE = {"a": np.array([3e6, 0.0, 0.0], np.float32),
        "b": np.array([[0.0], [-4e6]], np.float32)}
SMALL = {"a": np.array([0.1, -0.2, 0.05], np.float32),
         "b": np.array([[0.0], [0.3]], np.float32)}


@pytest.mark.parametrize("clip", [1.0, 0.25, 0.0])
def test_adamw_clips_the_global_gradient_norm(clip):
  # eps = 1 keeps the update sensitive to the gradient's size (with a tiny
  # eps, Adam's first step is lr * sign(g) whatever the clipping did).
  cfg = OptimConfig(learning_rate=0.1, schedule="constant", b1=0.9, b2=0.95,
                    eps=1.0, weight_decay=0.01, grad_clip=clip)
  got = _apply(make_optimizer(cfg), PARAMS, [HUGE, SMALL])
  want = _np_adamw(PARAMS, [HUGE, SMALL], lrs=[0.1, 0.1], b1=0.9, b2=0.95,
                   eps=1.0, wd=0.01, clip=clip)
  for k in PARAMS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)
  # After the first step alone, the clipped gradient is HUGE * clip / 5e6,
  # so a's first entry moves by lr * (g / (g + 1) + wd * 0.5) with g = 0.6 clip.
  first = _apply(make_optimizer(cfg), PARAMS, [HUGE])
  g = 0.6 * clip if clip else 3e6
  np.testing.assert_allclose(first["a"][0], 0.5 - 0.1 * (g / (g + 1) + 0.01 * 0.5),
                             rtol=1e-6)


def _r1pp_config():
  spec = importlib.util.spec_from_file_location("r1pp", ROOT / "configs" / "r1pp.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("demo")


def test_base_optim_defaults_leave_runs_unchanged():
  """optim.* defaults are the values every stage used before they were
  configurable (hand-copied here, so a changed default fails)."""
  assert dict(_r1pp_config().optim) == dict(
      schedule="cosine", min_lr_ratio=0.1, weight_decay=0.0, b1=0.9, b2=0.95,
      eps=1e-8, grad_clip=1.0)
  assert _r1pp_config().rl.loss.logits_chunk == 256


def test_config_override_reaches_each_stages_optimizer(tmp_path):
  cfg = _r1pp_config()
  cfg.optim.update(dict(grad_clip=0.25, eps=1.0, weight_decay=0.01,
                        schedule="constant", b2=0.99))
  cfg.rl.loss.logits_chunk = 16
  experiment.validate(cfg)
  model = models.Decoder(models.ModelConfig(
      vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=1,
      num_heads=2, num_kv_heads=1), rngs=nnx.Rngs(0))
  stage = Stage(name="pre", kind="pretrain", steps=30, data="texts",
                batch_size=2, learning_rate=0.1, warmup_steps=4)
  trainer = Trainer(model=model, tokenizer=None, make_sampler=None, tags=None,
                    reward_tags=None, stages=[stage], datasets={"texts": []},
                    prompt_fn=None, rl=experiment.rl_settings(cfg),
                    optim=experiment.optim_settings(cfg), workdir=str(tmp_path))
  trainer._new_stage(stage)
  learner = trainer.learner
  assert learner.loss_cfg.logits_chunk == 16
  # The stage's rate and warmup, then flat (the constant schedule).
  learner.step = 2
  np.testing.assert_allclose(learner.learning_rate(), 0.05, rtol=1e-6)
  learner.step = 25
  np.testing.assert_allclose(learner.learning_rate(), 0.1, rtol=1e-6)
  # The learner's own optimizer clips at 0.25 and uses eps, b2 and the
  # decay from the config; its first two updates are warmup steps 0 and 1.
  got = _apply(learner.tx, PARAMS, [HUGE, SMALL])
  want = _np_adamw(PARAMS, [HUGE, SMALL], lrs=[0.0, 0.025], b1=0.9, b2=0.99,
                   eps=1.0, wd=0.01, clip=0.25)
  for k in PARAMS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("field,value,expected", [
    ("schedule", "linear", "optim.schedule='linear' is not one of 'cosine', "
                           "'constant'"),
    ("grad_clip", -1.0, "optim.grad_clip=-1.0 must be >= 0"),
    ("weight_decay", -0.1, "optim.weight_decay=-0.1 must be >= 0"),
    ("min_lr_ratio", 1.5, "optim.min_lr_ratio=1.5 must be in [0, 1]"),
    ("b2", 1.0, "optim.b2=1.0 must be in [0, 1)"),
])
def test_bad_optim_values_are_config_errors(field, value, expected):
  cfg = _r1pp_config()
  cfg.optim[field] = value
  with pytest.raises(ValueError) as e:
    experiment.validate(cfg)
  assert expected in str(e.value)
