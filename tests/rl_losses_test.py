"""Advantages and losses of the RL update against NumPy loops and hand-worked
examples; the loss mask as the only path for gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsearch_jax.rl import _advantages as adv_lib
from rsearch_jax.rl import _losses as losses

jax.config.update("jax_default_matmul_precision", "highest")

B, T, V = 6, 12, 11


def _mask(rng, b=B, t=T):
  """Rollout-shaped loss masks: left prompt, sampled tokens with a document
  run in some rows, right padding; row 1 samples nothing."""
  mask = np.zeros((b, t), np.int32)
  for i in range(b):
    start = int(rng.integers(1, 4))
    end = int(rng.integers(start + 2, t + 1))
    mask[i, start:end] = 1
    if i % 2 == 0 and end - start > 5:
      d = int(rng.integers(start + 1, end - 3))
      mask[i, d:d + 2] = 0  # a retrieved document
  mask[1] = 0
  return mask


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_masked_mean(x, m):
  return float((x * m).sum() / m.sum()) if m.sum() else 0.0


# --- advantages ---------------------------------------------------------------


def test_group_advantages_hand_worked():
  rewards = np.array([1, 0, 0, 1, 3, 0, 0, 0, 2, 2, 2, 2], np.float32)
  base = np.asarray(adv_lib.group_baseline(rewards, 4))
  np.testing.assert_allclose(base, [.5, -.5, -.5, .5, 2.25, -.75, -.75, -.75,
                                    0, 0, 0, 0], atol=1e-6)
  norm = np.asarray(adv_lib.group_normalize(rewards, 4))
  # Group 2: mean 3/4, population std sqrt(27)/4, so 2.25 -> sqrt(3).
  r3 = np.sqrt(3.0)
  np.testing.assert_allclose(norm, [1, -1, -1, 1, r3, -1 / r3, -1 / r3, -1 / r3,
                                    0, 0, 0, 0], atol=1e-5)


@pytest.mark.parametrize("g", [1, 3, 8])
def test_group_advantages_match_numpy(g):
  rng = np.random.default_rng(g)
  rewards = rng.normal(size=4 * g).astype(np.float32)
  want_base, want_norm = np.zeros_like(rewards), np.zeros_like(rewards)
  for start in range(0, len(rewards), g):
    grp = rewards[start:start + g].astype(np.float64)
    mean = sum(grp) / g
    std = np.sqrt(sum((r - mean) ** 2 for r in grp) / g)
    for j, r in enumerate(grp):
      want_base[start + j] = r - mean
      want_norm[start + j] = (r - mean) / (std + 1e-6)
  jitted = jax.jit(adv_lib.compute_advantages, static_argnums=(1, 2))
  np.testing.assert_allclose(jitted(rewards, g, "reinforce_pp"), want_base,
                             atol=1e-5)
  for method in ("group_norm", "grpo"):
    np.testing.assert_allclose(jitted(rewards, g, method), want_norm,
                               rtol=1e-4, atol=1e-5)


def test_compute_advantages_rejects_bad_input():
  with pytest.raises(ValueError, match="method='ppo'"):
    adv_lib.compute_advantages(np.zeros(8), 4, "ppo")
  with pytest.raises(ValueError, match="B=10.*group_size=4"):
    adv_lib.compute_advantages(np.zeros(10), 4, "grpo")
  with pytest.raises(ValueError, match="group_size=0"):
    adv_lib.group_baseline(np.zeros(8), 0)
  with pytest.raises(ValueError, match="group_size=2.5"):
    adv_lib.group_baseline(np.zeros(8), 2.5)
  np.testing.assert_array_equal(  # numpy ints are fine
      adv_lib.group_baseline(np.arange(4.0), np.int64(2)), [-.5, .5, -.5, .5])
  with pytest.raises(ValueError, match=r"shape \[B\]"):
    adv_lib.group_normalize(np.zeros((2, 4)), 4)


def _np_token_rewards(outcome, logp, ref, mask, kl_coef):
  out = np.zeros(mask.shape, np.float64)
  for i in range(mask.shape[0]):
    last = None
    for t in range(mask.shape[1]):
      if mask[i, t]:
        out[i, t] = -kl_coef * (logp[i, t] - ref[i, t])
        last = t
    if last is not None:
      out[i, last] += outcome[i]
  return out


def _np_returns(r, mask, gamma):
  out = np.zeros(mask.shape, np.float64)
  for i in range(mask.shape[0]):
    acc = 0.0
    for t in reversed(range(mask.shape[1])):
      if mask[i, t]:
        acc = r[i, t] + gamma * acc
        out[i, t] = acc
  return out


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_token_rewards_and_returns_match_numpy(gamma):
  rng = np.random.default_rng(1)
  mask = _mask(rng)
  outcome = rng.normal(size=B).astype(np.float32)
  # Off-mask values are garbage: they must not leak into rewards or returns.
  logp = rng.normal(size=(B, T)).astype(np.float32) * 3
  ref = rng.normal(size=(B, T)).astype(np.float32) * 3
  token_r = jax.jit(adv_lib.token_rewards_with_kl)(outcome, logp, ref, mask, 0.1)
  want_r = _np_token_rewards(outcome, logp, ref, mask, 0.1)
  np.testing.assert_allclose(token_r, want_r, atol=1e-5)
  ret = jax.jit(adv_lib.discounted_returns, static_argnums=2)(
      np.where(mask, token_r, 99.0), mask, gamma)
  np.testing.assert_allclose(ret, _np_returns(want_r, mask, gamma), atol=1e-4)
  assert not np.asarray(ret)[1].any()  # the row with no sampled token


def test_reinforce_pp_hand_worked():
  """Group of 4 with rewards [1, 0, 0, 1]; row 0 has a document in the middle."""
  mask = np.array([[0, 1, 1, 0, 0, 1, 0],
                   [0, 1, 1, 1, 0, 0, 0],
                   [0, 1, 0, 0, 0, 0, 0],
                   [0, 0, 0, 0, 0, 0, 0]], np.int32)
  outcome = adv_lib.group_baseline(np.array([1, 0, 0, 1], np.float32), 4)
  logp = np.where(mask, -1.0, 0.0).astype(np.float32)
  ref = np.where(mask, -1.5, 0.0).astype(np.float32)   # k1 = 0.5 per token
  token_r = adv_lib.token_rewards_with_kl(outcome, logp, ref, mask, 0.2)
  np.testing.assert_allclose(token_r, [
      [0, -.1, -.1, 0, 0, .4, 0],          # 0.5 - 0.1 on the last token
      [0, -.1, -.1, -.6, 0, 0, 0],         # -0.5 - 0.1
      [0, -.6, 0, 0, 0, 0, 0],
      [0] * 7], atol=1e-6)
  returns = adv_lib.discounted_returns(token_r, mask)
  np.testing.assert_allclose(returns, [
      [0, .2, .3, 0, 0, .4, 0],            # the document slots get nothing
      [0, -.8, -.7, -.6, 0, 0, 0],
      [0, -.6, 0, 0, 0, 0, 0],
      [0] * 7], atol=1e-6)
  discounted = adv_lib.discounted_returns(token_r, mask, 0.5)
  np.testing.assert_allclose(discounted[0], [0, -.1 + .5 * (-.1 + .5 * .4),
                                             -.1 + .5 * .4, 0, 0, .4, 0],
                             atol=1e-6)


def test_masked_whiten_uses_masked_tokens_only():
  rng = np.random.default_rng(2)
  mask = _mask(rng)
  x = rng.normal(size=(B, T)).astype(np.float32) * 2 + 1
  vals = x[mask > 0].astype(np.float64)
  mean, var = vals.mean(), vals.var()
  want = np.where(mask, (x - mean) / np.sqrt(var + 1e-8), 0)
  out = np.asarray(adv_lib.masked_whiten(x, mask))
  np.testing.assert_allclose(out, want, atol=1e-5)
  assert abs(out[mask > 0].mean()) < 1e-5 and abs(out[mask > 0].std() - 1) < 1e-4
  np.testing.assert_allclose(adv_lib.masked_whiten(x, mask, shift_mean=False),
                             np.where(mask, want + mean, 0), atol=1e-5)
  # Changing values at masked-out slots (even to inf) changes nothing.
  poisoned = np.where(mask, x, rng.choice([1e6, -1e6, np.inf], size=x.shape))
  np.testing.assert_array_equal(adv_lib.masked_whiten(poisoned, mask), out)
  np.testing.assert_array_equal(adv_lib.masked_whiten(x, np.zeros_like(mask)), 0)


# --- losses -------------------------------------------------------------------


def test_masked_mean():
  rng = np.random.default_rng(3)
  mask = _mask(rng)
  x = np.where(mask, rng.normal(size=(B, T)), np.nan).astype(np.float32)
  assert float(losses.masked_mean(x, mask)) == pytest.approx(
      _np_masked_mean(np.nan_to_num(x), mask), abs=1e-6)
  rows = np.asarray(losses.masked_mean(x, mask, axis=1))
  for i in range(B):
    assert rows[i] == pytest.approx(
        _np_masked_mean(np.nan_to_num(x[i]), mask[i]), abs=1e-6)
  assert rows[1] == 0.0
  assert float(losses.masked_mean(x, np.zeros_like(mask))) == 0.0


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_token_logprobs_and_entropy_match_numpy(temperature):
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(B, T, V)).astype(np.float32) * 2
  tokens = rng.integers(0, V, (B, T)).astype(np.int32)
  mask = _mask(rng)
  lp = jax.jit(losses.token_logprobs_from_logits, static_argnums=2)(
      logits, tokens, temperature)
  ent = jax.jit(losses.entropy_from_logits)(logits, mask)
  tau = temperature or 1.0
  want_lp, want_ent = np.zeros((B, T)), np.zeros((B, T))
  for i in range(B):
    for t in range(1, T):
      ls = _np_log_softmax(logits[i, t - 1].astype(np.float64) / tau)
      want_lp[i, t] = ls[tokens[i, t]]
      if mask[i, t]:
        ls1 = _np_log_softmax(logits[i, t - 1].astype(np.float64))
        want_ent[i, t] = -(np.exp(ls1) * ls1).sum()
  np.testing.assert_allclose(lp, want_lp, atol=1e-5)
  np.testing.assert_allclose(ent, want_ent, atol=1e-5)


def _np_policy_loss(logp, old, adv, mask, eps_lo, eps_hi, aggregation):
  """Loops: per-token clipped surrogate, the aggregation, the statistics."""
  per = np.zeros(mask.shape)
  clipped_count = kl_sum = n = 0
  for i in range(mask.shape[0]):
    for t in range(mask.shape[1]):
      if not mask[i, t]:
        continue
      a = adv[i] if adv.ndim == 1 else adv[i, t]
      d = float(logp[i, t]) - float(old[i, t])
      ratio = np.exp(d)
      unclipped = ratio * a
      clipped = min(max(ratio, 1 - eps_lo), 1 + eps_hi) * a
      per[i, t] = -min(unclipped, clipped)
      clipped_count += clipped < unclipped
      kl_sum += np.exp(d) - 1 - d
      n += 1
  rows = [i for i in range(mask.shape[0]) if mask[i].any()]
  if aggregation == "token_mean":
    loss = per.sum() / n
  elif aggregation == "seq_mean_token_mean":
    loss = np.mean([per[i].sum() / mask[i].sum() for i in rows])
  else:
    loss = np.mean([per[i].sum() for i in rows])
  return loss, clipped_count / n, kl_sum / n


@pytest.mark.parametrize("aggregation", losses.AGGREGATIONS)
@pytest.mark.parametrize("clip_eps_high", [None, 0.28])
@pytest.mark.parametrize("per_token_adv", [False, True])
def test_policy_loss_matches_numpy(aggregation, clip_eps_high, per_token_adv):
  rng = np.random.default_rng(5)
  mask = _mask(rng)
  old = -rng.uniform(0.1, 4, (B, T)).astype(np.float32)
  # Ratios spread over [0.5, 2]: both clip bounds are hit with both signs of A.
  logp = (old + rng.uniform(-0.7, 0.7, (B, T))).astype(np.float32)
  adv = rng.normal(size=(B, T) if per_token_adv else B).astype(np.float32)
  fn = jax.jit(functools.partial(losses.policy_loss, clip_eps=0.2,
                                 clip_eps_high=clip_eps_high,
                                 aggregation=aggregation))
  loss, stats = fn(logp, old, adv, mask)
  want, clip_frac, kl = _np_policy_loss(
      logp, old, adv, mask, 0.2, clip_eps_high or 0.2, aggregation)
  assert 0.1 < clip_frac < 0.9
  assert float(loss) == pytest.approx(want, rel=1e-5, abs=1e-6)
  assert float(stats["clip_frac"]) == pytest.approx(clip_frac, abs=1e-6)
  assert float(stats["approx_kl"]) == pytest.approx(kl, rel=1e-4)


def test_policy_loss_gradient_matches_numpy():
  """d loss / d logp = -A * ratio / n where the unclipped term is the active
  one, 0 where clipping cut the token off (token_mean)."""
  rng = np.random.default_rng(6)
  mask = _mask(rng)
  old = -rng.uniform(0.1, 4, (B, T)).astype(np.float32)
  logp = (old + rng.uniform(-0.7, 0.7, (B, T))).astype(np.float32)
  adv = rng.normal(size=B).astype(np.float32)
  grad = jax.grad(lambda lp: losses.policy_loss(lp, old, adv, mask)[0])(logp)
  want = np.zeros((B, T))
  n = mask.sum()
  for i in range(B):
    for t in range(T):
      ratio = np.exp(float(logp[i, t]) - float(old[i, t]))
      if mask[i, t] and ratio * adv[i] <= np.clip(ratio, 0.8, 1.2) * adv[i]:
        want[i, t] = -adv[i] * ratio / n
  np.testing.assert_allclose(grad, want, atol=1e-6)
  # The first update (policy == sampler): ratio 1, no clipping, no KL.
  loss, stats = losses.policy_loss(old, old, adv, mask)
  assert float(loss) == pytest.approx(
      -_np_masked_mean(np.repeat(adv[:, None], T, 1), mask), abs=1e-6)
  assert float(stats["clip_frac"]) == 0 and float(stats["approx_kl"]) == 0


@pytest.mark.parametrize("kind", losses.KL_KINDS)
def test_kl_penalty_matches_numpy(kind):
  rng = np.random.default_rng(7)
  mask = _mask(rng)
  logp = -rng.uniform(0.1, 4, (B, T)).astype(np.float32)
  ref = -rng.uniform(0.1, 4, (B, T)).astype(np.float32)
  kl = np.asarray(jax.jit(losses.kl_penalty, static_argnums=3)(
      logp, ref, mask, kind))
  want = np.zeros((B, T))
  for i in range(B):
    for t in range(T):
      if mask[i, t]:
        lr = float(ref[i, t]) - float(logp[i, t])
        want[i, t] = {"k1": -lr, "k2": lr * lr / 2,
                      "k3": np.exp(lr) - lr - 1}[kind]
  np.testing.assert_allclose(kl, want, rtol=1e-5, atol=1e-6)
  if kind != "k1":
    assert (kl >= 0).all()


def test_bad_kind_or_aggregation_is_a_clear_error():
  z = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="kind='k4'"):
    losses.kl_penalty(z, z, z, kind="k4")
  with pytest.raises(ValueError, match="aggregation='sum'"):
    losses.policy_loss(z, z, z, z, aggregation="sum")


def test_masked_nll_matches_numpy():
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(B, T, V)).astype(np.float32)
  tokens = rng.integers(0, V, (B, T)).astype(np.int32)
  mask = _mask(rng)
  mask[0, 0] = 1  # slot 0 has no prediction: never a target
  total, n = 0.0, 0
  for i in range(B):
    for t in range(1, T):
      if mask[i, t]:
        total -= _np_log_softmax(logits[i, t - 1].astype(np.float64))[tokens[i, t]]
        n += 1
  nll = jax.jit(losses.masked_nll)(logits, tokens, mask)
  assert float(nll) == pytest.approx(total / n, rel=1e-5)
  assert float(losses.masked_nll(logits, tokens, np.zeros_like(mask))) == 0.0


# --- the mask as the only path for gradient ----------------------------------


def _rl_setup(seed=9, d=5):
  rng = np.random.default_rng(seed)
  mask = _mask(rng)
  embed = rng.normal(size=(V, d)).astype(np.float32)
  w = rng.normal(size=(d, V)).astype(np.float32)
  tokens = rng.integers(0, V, (B, T)).astype(np.int32)
  old = np.where(mask, -rng.uniform(0.5, 3, (B, T)), 0).astype(np.float32)
  ref = np.where(mask, -rng.uniform(0.5, 3, (B, T)), 0).astype(np.float32)
  adv = np.where(mask, rng.normal(size=(B, 1)), 0).astype(np.float32)
  return rng, mask, embed, w, tokens, old, ref, adv


def _total_loss(logits, tokens, old, ref, adv, mask):
  """Policy loss + k3 KL + entropy bonus, as the RL step combines them."""
  logp = losses.token_logprobs_from_logits(logits, tokens, 0.8)
  pg, _ = losses.policy_loss(logp, old, adv, mask, clip_eps_high=0.28)
  kl = losses.masked_mean(losses.kl_penalty(logp, ref, mask, "k3"), mask)
  ent = losses.masked_mean(losses.entropy_from_logits(logits / 0.8, mask), mask)
  return pg + 0.05 * kl - 0.01 * ent


def test_logit_gradient_is_exactly_zero_off_the_mask():
  """Through a linear model (logits = embed[tokens] @ W): the logits that score
  a prompt, document or padding token get exactly zero gradient; those that
  score a sampled token get a nonzero one."""
  _, mask, embed, w, tokens, old, ref, adv = _rl_setup()
  logits = jnp.asarray(embed)[tokens] @ w
  g = np.asarray(jax.grad(_total_loss)(logits, tokens, old, ref, adv, mask))
  # logits[:, t] score tokens[:, t + 1]; the last slot scores nothing.
  scores_sampled = np.zeros((B, T), bool)
  scores_sampled[:, :-1] = mask[:, 1:] > 0
  assert (g[~scores_sampled] == 0.0).all()
  assert (np.abs(g[scores_sampled]).sum(-1) > 0).all()
  assert not g[1].any()  # the row that sampled nothing
  # The same through W: rows that sampled nothing contribute nothing.
  def through_w(w_):
    return _total_loss(jnp.asarray(embed)[tokens] @ w_, tokens, old, ref, adv,
                       mask)
  gw = jax.grad(through_w)(w)
  assert np.abs(np.asarray(gw)).sum() > 0


def test_garbage_off_the_mask_changes_nothing():
  """Huge or infinite log-probs and advantages at masked-out slots: the loss
  and its gradient are bitwise the same, and finite."""
  rng, mask, embed, w, tokens, old, ref, adv = _rl_setup(seed=10)
  off = mask == 0
  garbage = lambda: rng.choice([1e4, -1e4, np.inf, -np.inf], size=(B, T))
  old2 = np.where(off, garbage(), old).astype(np.float32)
  ref2 = np.where(off, garbage(), ref).astype(np.float32)
  adv2 = np.where(off, garbage(), adv).astype(np.float32)

  def f(w_, o, r, a):
    return _total_loss(jnp.asarray(embed)[tokens] @ w_, tokens, o, r, a, mask)

  vg = jax.jit(jax.value_and_grad(f))
  loss, grad = vg(w, old, ref, adv)
  loss2, grad2 = vg(w, old2, ref2, adv2)
  assert np.isfinite(loss) and np.isfinite(np.asarray(grad)).all()
  assert float(loss) == float(loss2)
  np.testing.assert_array_equal(grad, grad2)


# --- log-probs from hidden states, chunked over the sequence ------------------


def _hidden_setup(seed=11, b=B, t=T, d=5, v=V):
  rng = np.random.default_rng(seed)
  hidden = rng.normal(size=(b, t, d)).astype(np.float32)
  w = rng.normal(size=(d, v)).astype(np.float32)
  tokens = rng.integers(0, v, (b, t)).astype(np.int32)
  return rng, hidden, w, tokens, _mask(rng, b, t)


def _head(w):
  return lambda h: jnp.einsum("btd,dv->btv", h, w)


# chunk 0 and >= T: one pass; 4 divides T = 12; 5 and 7 leave a partial chunk.
CHUNKS = [0, 1, 4, 5, 7, T, 100]


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_token_logprobs_from_hidden_match_numpy(temperature):
  _, hidden, w, tokens, mask = _hidden_setup()
  logits = hidden.astype(np.float64) @ w
  tau = temperature or 1.0
  want_lp, want_ent = np.zeros((B, T)), np.zeros((B, T))
  for i in range(B):
    for t in range(1, T):
      ls = _np_log_softmax(logits[i, t - 1] / tau)
      want_lp[i, t] = ls[tokens[i, t]]
      if mask[i, t]:
        want_ent[i, t] = -(np.exp(ls) * ls).sum()
  for chunk in CHUNKS:
    fn = jax.jit(lambda h, w_, tok, m, c=chunk: losses.token_logprobs_from_hidden(
        h, _head(w_), tok, temperature, chunk=c, entropy_mask=m))
    lp, ent = fn(hidden, w, tokens, mask)
    np.testing.assert_allclose(lp, want_lp, atol=1e-5, err_msg=f"chunk={chunk}")
    np.testing.assert_allclose(ent, want_ent, atol=1e-5, err_msg=f"chunk={chunk}")
    lp_only, none = losses.token_logprobs_from_hidden(
        hidden, _head(w), tokens, temperature, chunk=chunk)
    assert none is None
    np.testing.assert_allclose(lp_only, want_lp, atol=1e-5)


def _loss_from_terms(logp, ent, tokens, old, ref, adv, mask):
  pg, _ = losses.policy_loss(logp, old, adv, mask, clip_eps_high=0.28)
  kl = losses.masked_mean(losses.kl_penalty(logp, ref, mask, "k3"), mask)
  nll = losses.masked_nll_from_logprobs(logp, mask)
  return pg + 0.05 * kl - 0.01 * losses.masked_mean(ent, mask) + 0.1 * nll


def test_chunked_loss_and_gradients_equal_the_logits_path():
  """Policy loss + KL + entropy + NLL from hidden states, chunked, against the
  same objective on full logits (the [B, T, V] path): value and gradients
  with respect to the hidden states and the head's weight."""
  rng, hidden, w, tokens, mask = _hidden_setup(seed=12)
  old = np.where(mask, -rng.uniform(0.5, 3, (B, T)), 0).astype(np.float32)
  ref = np.where(mask, -rng.uniform(0.5, 3, (B, T)), 0).astype(np.float32)
  adv = np.where(mask, rng.normal(size=(B, 1)), 0).astype(np.float32)

  def via_logits(h, w_):
    logits = _head(w_)(h)
    logp = losses.token_logprobs_from_logits(logits, tokens, 0.8)
    ent = losses.entropy_from_logits(logits / 0.8, mask)
    return _loss_from_terms(logp, ent, tokens, old, ref, adv, mask)

  def via_hidden(h, w_, chunk):
    logp, ent = losses.token_logprobs_from_hidden(
        h, _head(w_), tokens, 0.8, chunk=chunk, entropy_mask=mask)
    return _loss_from_terms(logp, ent, tokens, old, ref, adv, mask)

  want, (want_gh, want_gw) = jax.value_and_grad(via_logits, (0, 1))(hidden, w)
  assert np.abs(np.asarray(want_gw)).max() > 1e-3  # a gradient to compare
  for chunk in CHUNKS:
    got, (gh, gw) = jax.jit(jax.value_and_grad(via_hidden, (0, 1)),
                            static_argnums=2)(hidden, w, chunk)
    assert float(got) == pytest.approx(float(want), rel=1e-6, abs=1e-5), chunk
    np.testing.assert_allclose(gh, want_gh, rtol=1e-5, atol=1e-5,
                               err_msg=f"chunk={chunk}")
    np.testing.assert_allclose(gw, want_gw, rtol=1e-5, atol=1e-5,
                               err_msg=f"chunk={chunk}")
    # Hidden states that score no sampled token (prompt, documents, padding,
    # the last slot) get exactly zero gradient, chunked or not.
    scores_sampled = np.zeros((B, T), bool)
    scores_sampled[:, :-1] = mask[:, 1:] > 0
    assert (np.asarray(gh)[~scores_sampled] == 0.0).all()


def test_chunking_bounds_the_logits_memory():
  """The compiled gradient's scratch memory: four [B, T, V] float32 buffers
  without chunking (logits, log-softmax, probabilities, their gradient);
  with chunking the same four of [B, chunk, V] only: it scales with the
  chunk, not with T."""
  b, t, d, v = 2, 256, 16, 2048
  _, hidden, w, tokens, mask = _hidden_setup(seed=13, b=b, t=t, d=d, v=v)

  def temp_bytes(chunk):
    def f(h, w_):
      logp, ent = losses.token_logprobs_from_hidden(
          h, _head(w_), tokens, 1.0, chunk=chunk, entropy_mask=mask)
      return (logp * mask).sum() + ent.sum()
    compiled = jax.jit(jax.grad(f, (0, 1))).lower(hidden, w).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  full = b * t * v * 4
  assert temp_bytes(0) >= 3 * full
  for chunk in (t // 8, t // 16):
    assert temp_bytes(chunk) < 5 * b * chunk * v * 4, chunk


def test_bad_chunk_is_a_clear_error():
  _, hidden, w, tokens, _ = _hidden_setup()
  with pytest.raises(ValueError, match="chunk=-1"):
    losses.token_logprobs_from_hidden(hidden, _head(w), tokens, chunk=-1)
