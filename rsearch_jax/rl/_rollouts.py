"""From sampled rollouts and their rewards to the arrays one update consumes.

Main entry points:
  token_advantages(rewards, loss_mask, ...)   [B] outcome rewards -> [B, T]
                                              per-token advantages, by method
  rl_batch(out, advantages, ...)              SamplerOutput -> RLBatch
  nll_batch(tokenizer, examples, max_len)     (prompt, segments) pairs ->
                                              NLLBatch (SFT, memorization)
  fitted_width(lengths, max_len, multiple)    how many columns an update needs
  fit_to_rollouts(out, multiple)              SamplerOutput cut to that width

Rollouts of one prompt are consecutive rows (group_size of them).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from rsearch_jax.rl import _advantages as adv_lib
from rsearch_jax.rl._advantages import ADVANTAGE_METHODS
# fitted_width lives with the update whose shapes it sets; it is part of
# this module's API too (sampler output -> batches).
from rsearch_jax.rl._train_step import NLLBatch, RLBatch, fitted_width
from rsearch_jax.tokenizer import Tokenizer


def fit_to_rollouts(out, multiple: int):
  """The sampler output with its [B, T] arrays cut to `fitted_width` of its
  rows' lengths: what an update reads, without the all-padding columns."""
  width = fitted_width(out.lengths, out.tokens.shape[1], multiple)
  return dataclasses.replace(
      out, tokens=out.tokens[:, :width], loss_mask=out.loss_mask[:, :width],
      logprobs=out.logprobs[:, :width], positions=out.positions[:, :width])


def token_advantages(rewards: np.ndarray, loss_mask: np.ndarray, *,
                     group_size: int, method: str = "reinforce_pp",
                     logprobs: np.ndarray | None = None,
                     ref_logprobs: np.ndarray | None = None,
                     kl_coef: float = 0.0, fold_kl: bool = False,
                     whiten: bool = False) -> np.ndarray:
  """Per-token advantages [B, T] from outcome rewards [B].

  reinforce_pp: r minus its group's mean; with `fold_kl`, -kl_coef * k1 on
    every sampled token is added to the token rewards, and the advantage of a
    token is the sum of the rewards from it to the end (REINFORCE++).
  group_norm / grpo: (r - mean) / std within the group, on every sampled
    token (GRPO keeps its KL as a loss term; `fold_kl` is refused).
  whiten: normalise over all sampled tokens of the batch.
  """
  if method not in ADVANTAGE_METHODS:
    raise ValueError(f"rl.advantage={method!r}: expected one of {ADVANTAGE_METHODS}")
  mask = jnp.asarray(loss_mask, jnp.float32)
  rewards = jnp.asarray(rewards, jnp.float32)
  if method == "reinforce_pp":
    outcome = adv_lib.group_baseline(rewards, group_size)
    if fold_kl and kl_coef > 0:
      if logprobs is None or ref_logprobs is None:
        raise ValueError("fold_kl needs the sampler's and the reference log-probs")
      token_r = adv_lib.token_rewards_with_kl(
          outcome, jnp.asarray(logprobs), jnp.asarray(ref_logprobs), mask, kl_coef)
    else:
      token_r = adv_lib.token_rewards_with_kl(
          outcome, jnp.zeros_like(mask), jnp.zeros_like(mask), mask, 0.0)
    adv = adv_lib.discounted_returns(token_r, mask, 1.0)
  else:
    if fold_kl:
      raise ValueError(f"rl.advantage={method!r} keeps KL as a loss term; use "
                       "loss.kl_kind='k3' (or 'k2'), not 'k1_reward'")
    outcome = adv_lib.group_normalize(rewards, group_size)
    adv = outcome[:, None] * mask
  if whiten:
    adv = adv_lib.masked_whiten(adv, mask)
  return np.asarray(adv * mask, np.float32)


def training_mask(out, mask_documents: bool = True) -> np.ndarray:
  """The loss mask an update uses: the sampler's (policy tokens only), or,
  for the no-mask ablation, every completion token including documents."""
  if mask_documents:
    return out.loss_mask
  slots = np.arange(out.tokens.shape[1])[None]
  return ((slots >= out.prompt_len) & (slots < out.lengths[:, None])).astype(np.int32)


def rl_batch(out, advantages: np.ndarray, loss_mask: np.ndarray,
             old_logprobs: np.ndarray, ref_logprobs: np.ndarray | None = None
             ) -> RLBatch:
  """The arrays of one RL update, in the sampler's [B, T] layout."""
  zeros = np.zeros(out.tokens.shape, np.float32)
  return RLBatch(
      tokens=np.asarray(out.tokens, np.int32),
      positions=np.asarray(out.positions, np.int32),
      loss_mask=np.asarray(loss_mask, np.int32),
      old_logprobs=np.where(loss_mask, old_logprobs, 0).astype(np.float32),
      ref_logprobs=(zeros if ref_logprobs is None else
                    np.where(loss_mask, ref_logprobs, 0).astype(np.float32)),
      advantages=np.asarray(advantages, np.float32))


Segment = tuple[str | Sequence[int], bool]


def encode_example(tokenizer: Tokenizer, prompt: str | Sequence[int],
                   segments: Sequence[Segment]) -> tuple[list[int], list[int]]:
  """Token ids and target mask of prompt + completion segments.

  A segment is (text or token ids, retrieved); retrieved segments and the
  prompt get mask 0, the rest mask 1. Each piece is encoded on its own, as
  the sampler sees them (prompt, sampled runs, document blocks).
  """
  ids = list(tokenizer.encode(prompt)) if isinstance(prompt, str) else list(prompt)
  mask = [0] * len(ids)
  for content, retrieved in segments:
    piece = tokenizer.encode(content) if isinstance(content, str) else list(content)
    ids += piece
    mask += [0 if retrieved else 1] * len(piece)
  return ids, mask


def nll_batch(tokenizer: Tokenizer,
              examples: Sequence[tuple[str | Sequence[int], Sequence[Segment]]],
              max_len: int, rows: int | None = None,
              fit_multiple: int = 0) -> NLLBatch:
  """Right-padded [rows, max_len] batch; longer examples are truncated.

  `rows` pads the batch with empty rows (mask 0) to a fixed count, so the
  jitted update sees one shape. `fit_multiple` > 0 narrows the batch to its
  longest example rounded up to that multiple (`fitted_width`).
  """
  rows = len(examples) if rows is None else rows
  if len(examples) > rows:
    raise ValueError(f"{len(examples)} examples do not fit in {rows} rows")
  encoded = [encode_example(tokenizer, prompt, segments)
             for prompt, segments in examples]
  max_len = fitted_width([len(ids) for ids, _ in encoded], max_len, fit_multiple)
  tokens = np.full((rows, max_len), tokenizer.pad_id, np.int32)
  positions = np.full((rows, max_len), -1, np.int32)
  mask = np.zeros((rows, max_len), np.int32)
  for i, (ids, m) in enumerate(encoded):
    ids, m = ids[:max_len], m[:max_len]
    tokens[i, :len(ids)] = ids
    positions[i, :len(ids)] = np.arange(len(ids))
    mask[i, :len(m)] = m
  return NLLBatch(tokens=tokens, positions=positions, loss_mask=mask)


def text_examples(tokenizer: Tokenizer, texts: Sequence[str]
                  ) -> list[tuple[list[int], list[Segment]]]:
  """Plain texts as `nll_batch` examples: BOS (if the tokenizer has one),
  then the text, every text token a target (pretraining, rehearsal)."""
  bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  return [(bos, [(text, False)]) for text in texts]


def pack_texts(tokenizer: Tokenizer, texts: Sequence[str],
               max_tokens: int) -> list[str]:
  """Joins consecutive texts (newline-separated) into texts of at most
  `max_tokens` tokens each, so pretraining rows are full rather than mostly
  padding. Order is kept; a text longer than `max_tokens` stays alone (and
  is truncated by the batch)."""
  packed, current, used = [], [], 0
  for text in texts:
    n = len(tokenizer.encode(text)) + 1  # + the newline joining it
    if current and used + n > max_tokens:
      packed.append("\n".join(current))
      current, used = [], 0
    current.append(text)
    used += n
  if current:
    packed.append("\n".join(current))
  return packed
