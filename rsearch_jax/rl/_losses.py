"""Token-level losses of the RL and SFT updates, masked to the policy's tokens.

Main entry points:
  token_logprobs_from_logits(logits, tokens, temperature)   teacher-forced
                                                            log-probs [B, T]
  entropy_from_logits(logits, mask)                         per-token entropy
  token_logprobs_from_hidden(hidden, head, tokens, ...)     the same two from
                                                            final hidden states,
                                                            chunked over T
  policy_loss(logp, old_logp, advantages, mask, ...)        PPO-clipped
                                                            surrogate + stats
  kl_penalty(logp, ref_logp, mask, kind)                    k1 / k2 / k3 per token
  masked_nll(logits, tokens, mask)                          next-token NLL (SFT,
                                                            memorization)
  masked_nll_from_logprobs(logp, mask)                      the same from [B, T]
                                                            log-probs
  masked_mean(x, mask, axis)                                0 for an empty mask

Alignment. Every per-token array is aligned with `tokens` (the sampler's
layout): value [b, t] belongs to tokens[b, t], and the logits that score it are
the model's outputs at slot t - 1 (which has seen tokens[b, :t]):

    slot          0      1      2      3
    tokens       x0     x1     x2     x3
    logits       l0     l1     l2     l3     (l3 scores nothing)
    logp          0   l0[x1] l1[x2] l2[x3]   (slot 0 has no prediction: 0)

Masking. `mask` is the sampler's loss mask (1 on sampled tokens, 0 on prompt,
retrieved documents and padding). Each token term is selected with
`jnp.where(mask, ..., 0)` on its *inputs* as well as its output, so values at
masked-out slots (whatever garbage, even inf) never reach the loss, and the
gradient with respect to the logits that score a masked-out token is exactly
zero, not merely small.

Memory. Full logits are [B, T, V] float32 (800 MB at B x T = 4096 and a 49k
vocabulary), and the softmax, the entropy and their gradients each add as
much again. `token_logprobs_from_hidden` never holds more than one chunk of
[B, chunk, V]: it maps over chunks of the sequence, and each chunk's function
is checkpointed, so the backward pass recomputes that chunk's logits from the
[B, chunk, D] hidden states instead of keeping them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsearch_jax.sampling import TagGrammar, apply_ban, token_logprobs

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")
KL_KINDS = ("k1", "k2", "k3")


def _on(mask: jax.Array) -> jax.Array:
  return jnp.asarray(mask) > 0


def masked_mean(x: jax.Array, mask: jax.Array,
                axis: int | tuple[int, ...] | None = None) -> jax.Array:
  """Mean of x over the slots where mask is nonzero (mask values weight them).

  Returns 0, not NaN, where the mask is all zero; values of x off the mask
  (even inf or NaN) are never read.
  """
  w = jnp.asarray(mask).astype(jnp.float32)
  total = jnp.where(w != 0, jnp.asarray(x, jnp.float32) * w, 0.0).sum(axis=axis)
  count = w.sum(axis=axis)
  return jnp.where(count != 0, total / jnp.where(count != 0, count, 1.0), 0.0)


def _shifted(logits: jax.Array) -> jax.Array:
  """Logits at slots 0..T-2 in float32: the ones that score tokens 1..T-1."""
  return jnp.asarray(logits)[:, :-1].astype(jnp.float32)


def _pad_first(x: jax.Array) -> jax.Array:
  """[B, T-1] values of tokens 1..T-1 -> [B, T] aligned with tokens (slot 0: 0)."""
  return jnp.pad(x, ((0, 0), (1, 0)))


def token_logprobs_from_logits(logits: jax.Array, tokens: jax.Array,
                               temperature: float = 1.0) -> jax.Array:
  """Teacher-forced log p(tokens[b, t] | tokens[b, :t]) at a temperature.

  Uses the sampler's own `token_logprobs` (softmax(logits / temperature),
  temperature 0 meaning 1), so on the first update the ratio against the
  sampler's log-probs is 1 up to the forward pass's numerics.

  Args:
    logits: [B, T, V] model outputs, logits[b, t] after reading tokens[b, :t+1].
    tokens: [B, T] int32.
    temperature: the sampling temperature.

  Returns:
    [B, T] float32; out[:, t] scores tokens[:, t] with logits[:, t - 1], and
    out[:, 0] = 0 (not masked here: mask it with the loss mask).
  """
  lp = token_logprobs(_shifted(logits), jnp.asarray(tokens)[:, 1:], temperature)
  return _pad_first(lp)


def entropy_from_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Entropy of the distribution each masked token was drawn from.

  Args:
    logits: [B, T, V] (divide by the temperature first to get the sampling
      distribution's entropy).
    mask: [B, T] loss mask, aligned with tokens.

  Returns:
    [B, T] float32: out[:, t] = H(softmax(logits[:, t - 1])) where mask[:, t]
    is set, 0 elsewhere and at slot 0.
  """
  logp = jax.nn.log_softmax(_shifted(logits), axis=-1)
  ent = _pad_first(-jnp.sum(jnp.exp(logp) * logp, axis=-1))
  return jnp.where(_on(mask), ent, 0.0)


def _chunk_terms(logits: jax.Array, targets: jax.Array, temperature: float,
                 with_entropy: bool, ban: jax.Array | None = None,
                 ban_ids: tuple[int, ...] = ()
                 ) -> tuple[jax.Array, jax.Array | None]:
  """[B, C, V] logits, [B, C] the tokens they score -> log-probs and entropy.

  The same arithmetic as token_logprobs_from_logits and entropy_from_logits,
  sharing one log-softmax; `ban` [B, C, K] removes the tag grammar's banned
  ids (`ban_ids`) from each distribution first, as the sampler did.
  """
  if ban is not None:
    logits = apply_ban(logits, ban, ban_ids)
  t = temperature if temperature > 0 else 1.0
  logp = jax.nn.log_softmax(logits.astype(jnp.float32) / t, axis=-1)
  lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1) if with_entropy else None
  return lp, ent


def token_logprobs_from_hidden(
    hidden: jax.Array, head, tokens: jax.Array, temperature: float = 1.0, *,
    chunk: int = 256, entropy_mask: jax.Array | None = None,
    grammar: TagGrammar | None = None, sampled: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
  """Teacher-forced log-probs (and entropy) from the final hidden states.

  Equal to `token_logprobs_from_logits(head(hidden), tokens, temperature)`
  and `entropy_from_logits(head(hidden) / temperature, entropy_mask)`, but
  the logits exist one chunk of `chunk` slots at a time, in the forward and
  in the backward pass (see the module docstring).

  Args:
    hidden: [B, T, D] final hidden states (after the final norm).
    head: [B, C, D] -> [B, C, V] float32 logits (e.g. `Decoder.logits`).
    tokens: [B, T] int32.
    temperature: the sampling temperature (0 means 1).
    chunk: slots per chunk; 0 (or >= T) computes all logits at once.
    entropy_mask: [B, T] loss mask; when given, also the entropy of each
      masked token's sampling distribution (0 elsewhere and at slot 0).
    grammar: the sampler's tag grammar: each token is scored under the
      distribution it was sampled from, with the tags the grammar banned
      there removed (needs `sampled`).
    sampled: [B, T] the tokens the policy sampled (the grammar's state moves
      on these only).

  Returns:
    (logp [B, T], entropy [B, T] or None), aligned with tokens as in
    token_logprobs_from_logits.
  """
  hidden, tokens = jnp.asarray(hidden), jnp.asarray(tokens)
  if chunk < 0:
    raise ValueError(f"logits chunk={chunk}: expected >= 0 (0: no chunking)")
  b, t, d = hidden.shape
  with_entropy = entropy_mask is not None
  ban, ban_ids = None, ()
  if grammar is not None:
    if sampled is None:
      raise ValueError("token_logprobs_from_hidden: a grammar needs `sampled`")
    ban, ban_ids = grammar.banned(tokens, jnp.asarray(sampled))[:, 1:], grammar.ids
  if chunk == 0 or chunk >= t:
    lp, ent = _chunk_terms(head(hidden[:, :-1]), tokens[:, 1:], temperature,
                           with_entropy, ban, ban_ids)
  else:
    # Every slot is scored against the next token (the last slot against a
    # dummy 0 and dropped), so the chunks tile [0, T) and T = n * chunk
    # needs no padding.
    n = -(-t // chunk)
    size = -(-t // n)  # the smallest chunk giving n chunks: least padding
    pad = n * size - t
    targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, pad + 1)))
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    h = h.reshape(b, n, size, d).swapaxes(0, 1)            # [n, B, C, D]
    targets = targets.reshape(b, n, size).swapaxes(0, 1)   # [n, B, C]
    if ban is not None:
      ban = jnp.pad(ban, ((0, 0), (0, pad + 1), (0, 0)))
      ban = ban.reshape(b, n, size, -1).swapaxes(0, 1)     # [n, B, C, K]

    @jax.checkpoint
    def one(args):
      h_c, tgt_c, ban_c = args
      return _chunk_terms(head(h_c), tgt_c, temperature, with_entropy, ban_c,
                          ban_ids)

    lp, ent = jax.lax.map(one, (h, targets, ban))
    unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n * size)[:, :t - 1]
    lp = unchunk(lp)
    ent = unchunk(ent) if with_entropy else None
  if not with_entropy:
    return _pad_first(lp), None
  return _pad_first(lp), jnp.where(_on(entropy_mask), _pad_first(ent), 0.0)


def _aggregate(per_token: jax.Array, m: jax.Array, aggregation: str) -> jax.Array:
  """[B, T] masked per-token losses -> scalar.

  token_mean: every sampled token of the batch weighs the same (OpenRLHF's
    default, DAPO's token-level loss).
  seq_mean_token_mean: mean over each row's tokens, then over rows (GRPO).
  seq_mean_token_sum: sum over each row's tokens, then mean over rows
    (Dr. GRPO's length-unbiased sum).
  Rows without a sampled token are left out of the mean over rows.
  """
  if aggregation == "token_mean":
    return masked_mean(per_token, m)
  has_tokens = m.any(axis=1)
  if aggregation == "seq_mean_token_mean":
    return masked_mean(masked_mean(per_token, m, axis=1), has_tokens)
  if aggregation == "seq_mean_token_sum":
    return masked_mean(jnp.where(m, per_token, 0.0).sum(axis=1), has_tokens)
  raise ValueError(f"aggregation={aggregation!r}: expected one of {AGGREGATIONS}")


def policy_loss(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                mask: jax.Array, clip_eps: float = 0.2,
                clip_eps_high: float | None = None,
                aggregation: str = "token_mean"
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """PPO-style clipped surrogate against the sampler's log-probs.

  Per sampled token, with ratio = exp(logp - old_logp) and advantage A:

    loss_t = -min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps_high) * A)

  Args:
    logp: [B, T] the policy's log-probs of the tokens (differentiable).
    old_logp: [B, T] the sampler's log-probs (constants).
    advantages: [B] per rollout or [B, T] per token.
    mask: [B, T] loss mask.
    clip_eps: lower clip range (and upper when clip_eps_high is None).
    clip_eps_high: upper clip range (DAPO's clip-higher), default clip_eps.
    aggregation: "token_mean", "seq_mean_token_mean" or "seq_mean_token_sum".

  Returns:
    (loss, stats). stats (no gradient), all over sampled tokens:
      clip_frac: fraction where the clipped term is the smaller one (the
        token's gradient is cut off).
      approx_kl: k3 estimate of KL(old || new), mean of exp(d) - 1 - d with
        d = logp - old_logp (>= 0, 0 iff the policies agree on the tokens).
      ratio_mean: mean ratio.
  """
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"aggregation={aggregation!r}: expected one of {AGGREGATIONS}")
  m = _on(mask)
  advantages = jnp.asarray(advantages, jnp.float32)
  if advantages.ndim == 1:
    advantages = advantages[:, None]
  adv = jnp.where(m, jnp.broadcast_to(advantages, m.shape), 0.0)
  log_ratio = jnp.where(m, logp - jax.lax.stop_gradient(old_logp), 0.0)
  ratio = jnp.exp(log_ratio)
  high = clip_eps if clip_eps_high is None else clip_eps_high
  unclipped = ratio * adv
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + high) * adv
  per_token = -jnp.minimum(unclipped, clipped)
  loss = _aggregate(per_token, m, aggregation)
  d = jax.lax.stop_gradient(log_ratio)
  stats = {
      "clip_frac": masked_mean(jax.lax.stop_gradient(clipped < unclipped), m),
      "approx_kl": masked_mean(jnp.expm1(d) - d, m),
      "ratio_mean": masked_mean(jnp.exp(d), m),
  }
  return loss, stats


def kl_penalty(logp: jax.Array, ref_logp: jax.Array, mask: jax.Array,
               kind: str = "k3") -> jax.Array:
  """Per-token estimate of KL(policy || reference) on the sampled tokens.

  With d = logp - ref_logp (Schulman's estimators, tokens drawn from the
  policy):
    k1: d                            unbiased, the REINFORCE++ reward term.
    k2: d^2 / 2                      its gradient is k1's as a reward.
    k3: exp(-d) + d - 1              >= 0, low variance (GRPO's loss term).

  Args:
    logp: [B, T] the policy's log-probs (differentiable).
    ref_logp: [B, T] the frozen reference policy's log-probs.
    mask: [B, T] loss mask.
    kind: "k1", "k2" or "k3".

  Returns:
    [B, T] float32, 0 off the mask; reduce with masked_mean(kl, mask).
  """
  m = _on(mask)
  d = jnp.where(m, logp - jax.lax.stop_gradient(ref_logp), 0.0)
  if kind == "k1":
    kl = d
  elif kind == "k2":
    kl = 0.5 * d * d
  elif kind == "k3":
    kl = jnp.expm1(-d) + d
  else:
    raise ValueError(f"kl kind={kind!r}: expected one of {KL_KINDS}")
  return jnp.where(m, kl, 0.0)


def masked_nll(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean next-token negative log-likelihood over the masked target tokens.

  Args:
    logits: [B, T, V] (temperature 1).
    tokens: [B, T] int32.
    mask: [B, T], 1 on the target tokens (aligned with tokens). Slot 0 has
      no prediction and is never a target.

  Returns:
    Scalar float32 mean over targets (0 when there is none).
  """
  return masked_nll_from_logprobs(
      token_logprobs_from_logits(logits, tokens, 1.0), mask)


def masked_nll_from_logprobs(logp: jax.Array, mask: jax.Array) -> jax.Array:
  """masked_nll from [B, T] temperature-1 log-probs aligned with tokens."""
  m = _on(mask).at[:, 0].set(False)
  return -masked_mean(logp, m)
