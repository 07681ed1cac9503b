"""Advantages for outcome-rewarded rollouts: group baselines, REINFORCE++ returns.

Main entry points:
  compute_advantages(rewards, group_size, method)   [B] outcome rewards ->
                                                    [B] per-rollout advantages
  group_baseline(rewards, group_size)               r - group mean
  group_normalize(rewards, group_size, eps)         (r - mean) / (std + eps)
  token_rewards_with_kl(outcome, logp, ref_logp, mask, kl_coef)
                                                    REINFORCE++ token rewards
  discounted_returns(token_rewards, mask, gamma)    reward-to-go per token
  masked_whiten(x, mask)                            batch whitening over the
                                                    policy's tokens only

Layout: B rollouts (rows), T token slots. Rollouts of one prompt are G
consecutive rows (B = num_prompts * G). `mask` is the sampler's loss mask: 1
exactly on the tokens the policy sampled, 0 on the prompt, on retrieved
documents and on padding. Every token-level function here reads values only at
masked-in slots and writes 0 at masked-out ones, so a document token can never
carry reward, return or advantage.

All functions are pure jax.numpy, jit-able (shapes and the `group_size`,
`method`, `gamma`, `shift_mean` arguments are static).

REINFORCE++ (Hu 2025) as OpenRLHF (R1-Searcher's base) runs it:

  outcome   = r - mean(r of the group)                 (group_baseline)
  reward_t  = -kl_coef * (logp_t - ref_logp_t)         on every sampled token
              + outcome                                on the last sampled one
  return_t  = sum of reward_s over sampled s >= t      (gamma = 1)
  advantage = masked_whiten(return)                    (optional)

GRPO's outcome advantage is group_normalize, broadcast to every sampled token;
its KL is a loss term (see _losses.kl_penalty), not part of the reward.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

ADVANTAGE_METHODS = ("reinforce_pp", "group_norm", "grpo")


def _grouped(rewards: jax.Array, group_size: int) -> jax.Array:
  """[B] -> [B // G, G], refusing shapes that do not split into groups."""
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1:
    raise ValueError(f"rewards: expected shape [B], got {rewards.shape}")
  try:
    g = operator.index(group_size)
  except TypeError:
    g = 0
  if g < 1:
    raise ValueError(f"group_size={group_size!r}: expected a positive int")
  group_size = g
  if rewards.shape[0] % group_size:
    raise ValueError(
        f"rewards: B={rewards.shape[0]} rollouts do not split into groups of "
        f"group_size={group_size} (B must be num_prompts * group_size)")
  return rewards.reshape(-1, group_size)


def group_baseline(rewards: jax.Array, group_size: int) -> jax.Array:
  """REINFORCE++ with a group baseline: each reward minus its group's mean.

  Args:
    rewards: [B] float outcome rewards, groups of `group_size` consecutive rows.
    group_size: G, rollouts per prompt.

  Returns:
    [B] float32 advantages; each group sums to zero.
  """
  g = _grouped(rewards, group_size)
  return (g - g.mean(axis=1, keepdims=True)).reshape(-1)


def group_normalize(rewards: jax.Array, group_size: int,
                    eps: float = 1e-6) -> jax.Array:
  """GRPO's outcome advantage: (r - group mean) / (group std + eps).

  The std is the population std (ddof=0), the root mean square of the
  centred rewards, so a group's advantages have RMS exactly 1 (up to eps). It
  is defined for any G >= 1 (the sample std, ddof=1, that torch's default gives
  OpenRLHF and that tunix uses, divides by G - 1: NaN for G = 1). The two
  differ by the constant factor sqrt((G - 1) / G), a global rescale of the
  advantages that the learning rate absorbs. A group whose rewards are all
  equal gets advantages 0 (0 / eps), not NaN.

  Args:
    rewards: [B] float outcome rewards, groups of `group_size` consecutive rows.
    group_size: G, rollouts per prompt.
    eps: added to the std.

  Returns:
    [B] float32 advantages.
  """
  g = _grouped(rewards, group_size)
  centred = g - g.mean(axis=1, keepdims=True)
  std = jnp.sqrt(jnp.mean(centred * centred, axis=1, keepdims=True))
  return (centred / (std + eps)).reshape(-1)


def compute_advantages(rewards: jax.Array, group_size: int,
                       method: str = "reinforce_pp", *,
                       eps: float = 1e-6) -> jax.Array:
  """Per-rollout advantages [B] from outcome rewards [B], by method.

  Methods:
    reinforce_pp: group_baseline (REINFORCE++ with a group baseline, as
      R1-Searcher trains); fold the KL in with token_rewards_with_kl and take
      discounted_returns for the token-level REINFORCE++ advantages.
    group_norm: group_normalize.
    grpo: the same outcome advantage as group_norm (GRPO differs from it only
      in keeping the KL as a loss term, which is the loss's business).

  Raises:
    ValueError: unknown method, or B not a multiple of group_size.
  """
  if method == "reinforce_pp":
    return group_baseline(rewards, group_size)
  if method in ("group_norm", "grpo"):
    return group_normalize(rewards, group_size, eps)
  raise ValueError(f"advantage method={method!r}: expected one of "
                   f"{ADVANTAGE_METHODS}")


def _last_masked_onehot(m: jax.Array) -> jax.Array:
  """[B, T] bool -> [B, T] bool, True only at each row's last True slot.

    m   [0 1 1 0 1 0 0]  ->  [0 0 0 0 1 0 0]
    m   [0 0 0 0 0 0 0]  ->  [0 0 0 0 0 0 0]
  """
  t = m.shape[1]
  last = t - 1 - jnp.argmax(m[:, ::-1], axis=1)
  return (jnp.arange(t)[None, :] == last[:, None]) & m


def token_rewards_with_kl(outcome: jax.Array, logp: jax.Array,
                          ref_logp: jax.Array, mask: jax.Array,
                          kl_coef: float) -> jax.Array:
  """REINFORCE++ per-token rewards: the k1 KL penalty folded into the reward.

  Args:
    outcome: [B] per-rollout (baselined) outcome reward.
    logp: [B, T] the sampler's log-probs of the sampled tokens.
    ref_logp: [B, T] the reference policy's log-probs of the same tokens.
    mask: [B, T] loss mask (1 on sampled tokens).
    kl_coef: weight of the KL penalty (0: outcome only).

  Returns:
    [B, T] float32: -kl_coef * (logp - ref_logp) on every sampled token, plus
    `outcome` on each row's last sampled token; 0 off the mask (a row with no
    sampled token gets no reward at all).
  """
  m = jnp.asarray(mask) > 0
  log_ratio = jnp.where(m, jnp.asarray(logp, jnp.float32)
                        - jnp.asarray(ref_logp, jnp.float32), 0.0)
  outcome = jnp.asarray(outcome, jnp.float32)[:, None]
  final = jnp.where(_last_masked_onehot(m), outcome, 0.0)
  return final - kl_coef * log_ratio


def discounted_returns(token_rewards: jax.Array, mask: jax.Array,
                       gamma: float = 1.0) -> jax.Array:
  """Reward-to-go over the sampled tokens: R_t = r_t + gamma * R_next.

  `next` is the row's next *sampled* token: retrieved documents are not
  actions of the policy, so they neither add reward nor advance the discount
  (with gamma = 1, REINFORCE++'s setting, this is a plain reverse cumulative
  sum of the masked rewards).

    r     [0  .1  .2  x  x  .3  0]      (x: documents, mask 0)
    mask  [0  1   1   0  0  1   0]
    R     [0  .6  .5  0  0  .3  0]      (gamma = 1)

  Args:
    token_rewards: [B, T] float per-token rewards.
    mask: [B, T] loss mask.
    gamma: a Python float discount per sampled token.

  Returns:
    [B, T] float32 returns, 0 off the mask.
  """
  m = jnp.asarray(mask) > 0
  r = jnp.where(m, jnp.asarray(token_rewards, jnp.float32), 0.0)
  if gamma == 1.0:
    to_go = jnp.flip(jnp.cumsum(jnp.flip(r, axis=1), axis=1), axis=1)
    return jnp.where(m, to_go, 0.0)

  def step(carry, x):
    r_t, m_t = x
    carry = jnp.where(m_t, r_t + gamma * carry, carry)
    return carry, jnp.where(m_t, carry, 0.0)

  _, out = jax.lax.scan(step, jnp.zeros(r.shape[0], jnp.float32), (r.T, m.T),
                        reverse=True)
  return out.T


def masked_whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8,
                  shift_mean: bool = True) -> jax.Array:
  """Normalise x over the sampled tokens of the whole batch.

  The mean and the (population) variance are taken over masked-in slots only,
  all rows together, so documents, prompts and padding neither shift nor scale
  the statistics; out = (x - mean) / sqrt(var + eps), plus the mean back when
  `shift_mean` is False (scale only, as TRL's masked_whiten).

  Args:
    x: [B, T] float values (e.g. REINFORCE++ returns).
    mask: [B, T] loss mask.
    eps: added to the variance.
    shift_mean: subtract the mean (True) or keep it (False).

  Returns:
    [B, T] float32, 0 off the mask (all 0 for an all-zero mask).
  """
  m = jnp.asarray(mask) > 0
  x = jnp.where(m, jnp.asarray(x, jnp.float32), 0.0)
  n = jnp.maximum(m.sum(), 1).astype(jnp.float32)
  mean = x.sum() / n
  centred = jnp.where(m, x - mean, 0.0)
  var = (centred * centred).sum() / n
  out = centred * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    out = out + mean
  return jnp.where(m, out, 0.0)
