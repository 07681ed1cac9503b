"""The jitted decode loop: prefill, one step, the loop, and the retrieval hand-off.

Main entry point: `generate(model, prompts, prompt_mask, rng, *, config, stops,
handoff, batch_sharding, grammar)`, traced once per (model graph, shapes, config).

Each step every unfinished row samples one token. When a row samples the
closing query tag, the host hand-off is called (`io_callback`) and returns
that row's fixed-shape document block, which `splice` writes into the row's
tokens and KV cache with one chunked forward pass over the asking rows only
(gathered out of the batch), in the same step. So documents enter the
sequence as token ids, never as re-encoded text, rows that are not searching
keep decoding, and a splice costs about the asking rows' own document
prefill. (BENCHMARKS.md compares this with returning to Python between
segments.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rsearch_jax.models import Decoder, init_cache
from rsearch_jax.sampling._grammar import NO_LEAF, TagGrammar
from rsearch_jax.sampling._state import (BUDGET, LENGTH, RUNNING, STOPPED,
                                         SamplingConfig, SamplingState,
                                         StopTokens)

# host(tokens [B,T], cursor [B], need [B], num_searches [B], row_ids [B],
#      step []) -> (block [B, D] int32, block_len [B] int32, ran [B] int32)
HandoffFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]


def sample_token(logits: jax.Array, rng: jax.Array,
                 config: SamplingConfig) -> jax.Array:
  """[B, V] logits -> [B] token ids (greedy, temperature, top-k, top-p)."""
  if config.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / config.temperature
  if config.top_k:
    kth = jax.lax.top_k(logits, config.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if config.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token stays if the
    # mass strictly before it is below top_p.
    before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(before < config.top_p, sorted_logits, jnp.inf),
                     axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def token_logprobs(logits: jax.Array, tokens: jax.Array,
                   temperature: float) -> jax.Array:
  """log p(token) under softmax(logits / temperature) (temperature 0 -> 1).

  The same function scores teacher-forced sequences in the RL update, so the
  sampler's log-probs and the learner's agree by construction of the maths,
  and by test in numbers.
  """
  t = temperature if temperature > 0 else 1.0
  logp = jax.nn.log_softmax(logits.astype(jnp.float32) / t, axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def _ends_with(tokens, loss_mask, cursor, seq: tuple[int, ...]) -> jax.Array:
  """[B] bool: the row's last len(seq) tokens are `seq`, all sampled."""
  n = len(seq)
  idx = cursor[:, None] - n + jnp.arange(n)[None, :]  # [B, n]
  ok = idx >= 0
  idx = jnp.maximum(idx, 0)
  got = jnp.take_along_axis(tokens, idx, axis=1)
  sampled = jnp.take_along_axis(loss_mask, idx, axis=1) > 0
  return jnp.all(ok & sampled & (got == jnp.asarray(seq)[None, :]), axis=1)


def _set_at(buf: jax.Array, cursor: jax.Array, value: jax.Array,
            active: jax.Array) -> jax.Array:
  """buf[b, cursor[b]] = value[b] for active rows (others untouched)."""
  slot = jnp.where(active, cursor, buf.shape[1])  # out of range -> dropped
  return buf.at[jnp.arange(buf.shape[0]), slot].set(value, mode="drop")


def prefill(model: Decoder, prompts: jax.Array, prompt_mask: jax.Array,
            rng: jax.Array, config: SamplingConfig, stops: StopTokens,
            batch_sharding=None) -> SamplingState:
  """Runs the left-padded prompts [B, P] through the model into a new cache."""
  b, p = prompts.shape
  t = config.max_len
  constrain = (lambda x: jax.lax.with_sharding_constraint(x, batch_sharding)
               if batch_sharding is not None else x)
  positions = jnp.where(prompt_mask > 0, jnp.cumsum(prompt_mask, axis=1) - 1, -1)
  cache = init_cache(model.cfg, b, t)
  logits, cache = model(prompts, positions, cache, last_only=True)
  tokens = jnp.full((b, t), stops.pad_id, jnp.int32).at[:, :p].set(prompts)
  zeros = jnp.zeros((b,), jnp.int32)
  return SamplingState(
      tokens=constrain(tokens),
      loss_mask=constrain(jnp.zeros((b, t), jnp.int32)),
      logprobs=constrain(jnp.zeros((b, t), jnp.float32)),
      cursor=jnp.full((b,), p, jnp.int32),
      next_pos=jnp.sum(prompt_mask, axis=1).astype(jnp.int32),
      cache=dataclasses.replace(cache, end=jnp.full((b,), p, jnp.int32)),
      logits=logits[:, -1],
      done=jnp.zeros((b,), bool),
      stop_reason=zeros,
      num_sampled=zeros,
      num_searches=zeros,
      open_leaf=jnp.full((b,), NO_LEAF, jnp.int32),
      rng=rng,
      step=jnp.int32(0),
  )


def decode_step(model: Decoder, s: SamplingState, config: SamplingConfig,
                stops: StopTokens, handoff: Callable | None,
                row_ids: jax.Array, shards: int = 1,
                grammar: TagGrammar | None = None) -> SamplingState:
  """One sampled token for every unfinished row; retrieval for rows that asked.

  A row that has just sampled the closing query tag gets its document block
  from the host and spliced in (`splice`) within the same step. With a
  `grammar`, the tags it bans have probability 0 (in the log-probs too).
  """
  rng, key = jax.random.split(s.rng)
  active = ~s.done
  logits = s.logits
  if grammar is not None:
    logits = logits + grammar.step_bias(s.open_leaf, logits.shape[-1])
  token = sample_token(logits, key, config)
  logprob = jnp.where(active, token_logprobs(logits, token, config.temperature),
                      0.0)
  open_leaf = (grammar.advance(s.open_leaf, token, active)
               if grammar is not None else s.open_leaf)
  tokens = _set_at(s.tokens, s.cursor, token, active)
  loss_mask = _set_at(s.loss_mask, s.cursor, active.astype(jnp.int32), active)
  logprobs = _set_at(s.logprobs, s.cursor, logprob, active)
  pos = jnp.where(active, s.next_pos, -1)
  cache = dataclasses.replace(s.cache, end=s.cursor)
  logits, cache = model(token[:, None], pos[:, None], cache)
  step_len = active.astype(jnp.int32)
  cursor = s.cursor + step_len
  cache = dataclasses.replace(cache, end=cursor)
  num_sampled = s.num_sampled + step_len

  # Why rows stop; the first reason that applies is kept.
  stopped = jnp.zeros_like(active)
  for seq in stops.stop:
    stopped |= _ends_with(tokens, loss_mask, cursor, seq)
  stopped &= active
  over_budget = num_sampled >= config.max_new_tokens
  full = cursor >= config.max_len
  reason = jnp.where(stopped, STOPPED,
                     jnp.where(over_budget, BUDGET, jnp.where(full, LENGTH, RUNNING)))
  newly_done = active & (reason != RUNNING)
  s = SamplingState(
      tokens=tokens, loss_mask=loss_mask, logprobs=logprobs, cursor=cursor,
      next_pos=s.next_pos + step_len, cache=cache, logits=logits[:, 0],
      done=s.done | newly_done,
      stop_reason=jnp.where(newly_done, reason, s.stop_reason),
      num_sampled=num_sampled, num_searches=s.num_searches,
      open_leaf=open_leaf, rng=rng, step=s.step)

  if handoff is not None and stops.query_end is not None:
    asked = jnp.zeros_like(active)
    for seq in stops.query_end:
      asked |= _ends_with(tokens, loss_mask, cursor, seq)
    need = active & ~s.done & asked

    def retrieve(s):
      block, block_len, ran = handoff(s.tokens, s.cursor, need, s.num_searches,
                                      row_ids, s.step)
      return splice(model, s, need, block, block_len, ran, config, shards)

    s = jax.lax.cond(jnp.any(need), retrieve, lambda s: s, s)
  return dataclasses.replace(s, step=s.step + 1)


def splice(model: Decoder, s: SamplingState, need: jax.Array,
           block: jax.Array, block_len: jax.Array, ran: jax.Array,
           config: SamplingConfig, shards: int = 1) -> SamplingState:
  """Writes each asking row's document block into its tokens and KV cache.

  The block goes through the model as one chunked forward pass per group of
  `config.splice_rows` asking rows per shard: the rows are gathered out of
  the batch (within their shard, so a sharded batch needs no communication),
  prefilled, and scattered back. So a splice costs the asking rows' own
  document prefill, not the whole batch's. Document tokens keep loss_mask 0.

  Args:
    need: [B] bool rows whose block is in `block`.
    block: [B, D] int32 right-padded document blocks; block_len: [B] lengths.
    ran: [B] int32 1 where the retrieval was run (counted in num_searches).
    shards: how many shards the batch axis is split into (static).
  """
  b, d = block.shape
  # What fits; a row that fills its buffer ends with reason LENGTH.
  n = jnp.where(need, jnp.minimum(block_len, config.max_len - s.cursor), 0)
  cols = jnp.arange(d)[None, :]
  slots = jnp.where(cols < n[:, None], s.cursor[:, None] + cols, s.tokens.shape[1])
  tokens = s.tokens.at[jnp.arange(b)[:, None], slots].set(block, mode="drop")

  g, rows = shards, min(config.splice_rows, b // shards)
  per = b // g  # rows per shard

  def grouped(x):
    return x.reshape((g, per) + x.shape[1:])

  def take(x, idx):  # [B, ...] -> [g * rows, ...]: the chosen rows of each shard
    out = jax.vmap(lambda xs, i: xs[i])(grouped(x), idx)
    return out.reshape((g * rows,) + x.shape[1:])

  def put(x, idx, part):  # inverse of take; idx == per is dropped
    part = part.reshape((g, rows) + x.shape[1:])
    out = jax.vmap(lambda xs, i, p: xs.at[i].set(p, mode="drop"))(
        grouped(x), idx, part)
    return out.reshape(x.shape)

  def group_pass(carry):
    pending, cache, logits = carry
    # The first `rows` pending rows of each shard (stable sort keeps order).
    idx = jnp.argsort(~grouped(pending), axis=1, stable=True)[:, :rows]
    valid = jnp.take_along_axis(grouped(pending), idx, axis=1)
    write = jnp.where(valid, idx, per)
    sub_n = jnp.where(valid.reshape(-1), take(n, idx), 0)
    positions = jnp.where(cols < sub_n[:, None],
                          take(s.next_pos, idx)[:, None] + cols, -1)
    # Every cache array has the batch first, so one map moves them all.
    sub_cache = jax.tree.map(lambda x: take(x, idx), cache)
    sub_logits, sub_cache = model(take(block, idx), positions, sub_cache,
                                  logits_at=jnp.maximum(sub_n - 1, 0))
    cache = jax.tree.map(lambda x, y: put(x, write, y), cache, sub_cache)
    logits = put(logits, write, sub_logits[:, 0])
    pending = put(pending, write, jnp.zeros((g * rows,), bool))
    return pending, cache, logits

  _, cache, logits = jax.lax.while_loop(
      lambda c: jnp.any(c[0]), group_pass,
      (need & (n > 0), dataclasses.replace(s.cache, end=s.cursor), s.logits))
  cursor = s.cursor + n
  filled = need & (cursor >= config.max_len)
  return dataclasses.replace(
      s, tokens=tokens, cursor=cursor, next_pos=s.next_pos + n,
      cache=dataclasses.replace(cache, end=cursor), logits=logits,
      done=s.done | filled,
      stop_reason=jnp.where(filled, LENGTH, s.stop_reason),
      num_searches=s.num_searches + ran)


def make_device_handoff(host_fn: HandoffFn, config: SamplingConfig,
                        mesh=None, batch_axes: tuple[str, ...] = ()):
  """Wraps the host function as an `io_callback` with fixed result shapes.

  On a mesh whose batch axes shard the rows, the callback runs per device on
  the rows that device holds (`shard_map`), so on a multi-host pod each host
  retrieves for its own rows. Devices that hold the same rows (a `tensor`
  axis) call with the same (row id, step); the host side memoizes on it.
  """

  def local(tokens, cursor, need, num_searches, row_ids, step):
    b = tokens.shape[0]
    shapes = (jax.ShapeDtypeStruct((b, config.doc_block_len), jnp.int32),
              jax.ShapeDtypeStruct((b,), jnp.int32),
              jax.ShapeDtypeStruct((b,), jnp.int32))
    return jax.experimental.io_callback(
        host_fn, shapes, tokens, cursor, need, num_searches, row_ids, step,
        ordered=False)

  if mesh is None or not batch_axes:
    return local
  row = PartitionSpec(batch_axes)
  return jax.shard_map(
      local, mesh=mesh,
      in_specs=(row, row, row, row, row, PartitionSpec()),
      out_specs=(row, row, row), check_vma=False)


def batch_shards(batch_sharding: NamedSharding | None) -> int:
  """How many blocks the batch axis is split into by `batch_sharding`."""
  if batch_sharding is None:
    return 1
  axes = batch_sharding.spec[0] if batch_sharding.spec else None
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return int(np.prod([batch_sharding.mesh.shape[a] for a in axes]))


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "config", "stops", "handoff", "batch_sharding", "grammar"))
def generate(graphdef, params, prompts: jax.Array, prompt_mask: jax.Array,
             rng: jax.Array, row_ids: jax.Array, *, config: SamplingConfig,
             stops: StopTokens, handoff: Callable | None,
             batch_sharding: NamedSharding | None = None,
             grammar: TagGrammar | None = None) -> SamplingState:
  """Prefill, then decode until every row is done (jitted as one program)."""
  model = nnx.merge(graphdef, params)
  shards = batch_shards(batch_sharding)
  state = prefill(model, prompts, prompt_mask, rng, config, stops,
                  batch_sharding)
  # Each step writes one slot, so max_len - prompt length steps always finish.
  max_steps = config.max_len - prompts.shape[1]

  def cond(s):
    return jnp.any(~s.done) & (s.step < max_steps)

  def body(s):
    return decode_step(model, s, config, stops, handoff, row_ids, shards,
                       grammar)

  return jax.lax.while_loop(cond, body, state)
