"""The policy network: a Llama / Qwen2 family decoder in Flax NNX, with KV cache.

Main entry points:
  Decoder(cfg, rngs=...)                 the model.
  Decoder.__call__(tokens, positions, cache=None) -> (logits, cache)
  init_cache(cfg, batch, length)         an empty KV cache.
  positions_from_mask(mask)              per-token positions of a padded batch.
  smear_keys(k, positions, weight)       the optional smeared keys (below).

Positions carry the padding: a token's position is its index within its own
sequence, and padding tokens have position -1. A query attends to a key iff the
key's position is in [0, query position]. The same rule serves left-padded and
right-padded batches, teacher forcing without a cache, and a cache that is
written at a per-row cursor (so the sampler can splice retrieved documents into
one row while the others decode):

    tokens     [pad pad  a   b ]     [ a   b   c  pad]
    positions  [ -1  -1  0   1 ]     [ 0   1   2  -1 ]

With `ModelConfig.smear_keys` each key is first mixed with the key of the
row's previous real token (a learned weight per KV head), so the cache also
keeps that last key per row and layer (`KVCache.last_k`).

Each layer is its own `Block` (per-layer parameters and per-layer cache
arrays, so a decode step reads every weight exactly once, in place). Every
parameter carries logical axis names (`axes` metadata) that
`rsearch_jax.sharding` maps to the mesh.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from rsearch_jax import sharding
from rsearch_jax.models._config import ModelConfig

_NEG = -1e30  # finite, so a query with no valid key gets uniform weights, not NaN
# A pass without a cache splits its queries into blocks of this many positions
# and each block attends only to the keys up to its own end: the blocks above
# the diagonal are all masked, so skipping them changes nothing but the time
# (10 of 16 blocks at 1,024 positions). See `_attention`.
CAUSAL_BLOCK = 256


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
  """Keys and values of every layer, written at a per-row cursor.

  Attributes:
    k: L arrays [B, K, S, Dh]: keys (after RoPE) of every written slot (heads
      before slots, the layout the attention contraction reads as is).
    v: L arrays [B, K, S, Dh]: values.
    pos: [B, S] int32 position of the token in each slot; -1 when empty.
    end: [B] int32 next slot to write in each row.
    last_k: with `smear_keys` only (else empty): L arrays [B, K, Dh], the key
      (before smearing and RoPE) of each row's last real token, which the
      next token's key is smeared with.
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  pos: jax.Array
  end: jax.Array
  last_k: tuple[jax.Array, ...] = ()

  @property
  def length(self) -> int:
    return self.pos.shape[1]


def init_cache(cfg: ModelConfig, batch: int, length: int,
               dtype=None) -> KVCache:
  """An empty cache of `length` slots per row (dtype: compute dtype)."""
  dtype = cfg.jnp_dtype if dtype is None else dtype
  shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
  last_shape = (batch, cfg.num_kv_heads, cfg.head_dim)
  return KVCache(
      k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
      v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
      pos=jnp.full((batch, length), -1, jnp.int32),
      end=jnp.zeros((batch,), jnp.int32),
      last_k=tuple(jnp.zeros(last_shape, dtype) for _ in range(cfg.num_layers))
      if cfg.smear_keys else (),
  )


def positions_from_mask(mask: jax.Array) -> jax.Array:
  """[B, T] 0/1 mask of real tokens -> [B, T] positions, -1 on padding."""
  mask = mask.astype(jnp.int32)
  return jnp.where(mask > 0, jnp.cumsum(mask, axis=-1) - 1, -1)


# --- RoPE -------------------------------------------------------------------


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
  """Inverse frequencies [Dh/2] with HF's linear or llama3 scaling applied."""
  dh = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
  scaling = cfg.rope_scaling_dict
  if not scaling:
    return inv
  kind = scaling["rope_type"]
  factor = float(scaling["factor"])
  if kind == "linear":
    return inv / factor
  # llama3: long wavelengths are slowed by `factor`, short ones kept, and the
  # band between is interpolated smoothly.
  low = float(scaling["low_freq_factor"])
  high = float(scaling["high_freq_factor"])
  old_ctx = float(scaling["original_max_position_embeddings"])
  wavelen = 2 * math.pi / inv
  low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
  scaled = jnp.where(wavelen > low_wavelen, inv / factor, inv)
  smooth = (old_ctx / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array,
               inv_freq: jax.Array) -> jax.Array:
  """HF "rotate half" RoPE. x: [B, T, N, Dh], positions: [B, T]."""
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, Dh/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def smear_keys(k: jax.Array, positions: jax.Array, weight: jax.Array,
               last: tuple[jax.Array, jax.Array] | None = None):
  """Mixes each key with the key of the row's previous real token.

  k'_t = k_t + sigmoid(weight) * (k_prev - k_t), per KV head, where prev is
  the last token before t whose position is >= 0 (padding is skipped). A token
  with no real token before it keeps its key.

  Args:
    k: [B, T, K, Dh] keys before RoPE.
    positions: [B, T] int32, -1 on padding.
    weight: [K] the learned logits of the mixing weight.
    last: with a cache, ([B, K, Dh] the cached previous key, [B] bool whether
      the row has one): the previous key of the chunk's first real token.

  Returns:
    (smeared keys [B, T, K, Dh], [B, K, Dh] the unsmeared key of each row's
    last real token after this chunk: `last`'s when the chunk has none).
  """
  b, t = positions.shape
  index = jnp.where(positions >= 0, jnp.arange(t)[None, :], -1)
  upto = jax.lax.cummax(index, axis=1)  # last real index <= t
  before = jnp.concatenate([jnp.full((b, 1), -1, upto.dtype), upto[:, :-1]], 1)

  def gather(i):  # [B, T'] indices (-1 allowed) -> [B, T', K, Dh]
    return jnp.take_along_axis(k, jnp.maximum(i, 0)[:, :, None, None], axis=1)

  prev, has_prev = gather(before), before >= 0
  new_last = gather(upto[:, -1:])[:, 0]
  if last is not None:
    last_k, has_last = last
    from_cache = ~has_prev & has_last[:, None]
    prev = jnp.where(from_cache[..., None, None], last_k[:, None].astype(k.dtype),
                     prev)
    has_prev |= from_cache
    new_last = jnp.where((upto[:, -1] >= 0)[:, None, None],
                         new_last.astype(last_k.dtype), last_k)
  mix = jax.nn.sigmoid(weight.astype(jnp.float32)).astype(k.dtype)[:, None]
  smeared = jnp.where(has_prev[..., None, None], k + mix * (prev - k), k)
  return smeared, new_last


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  xf = x.astype(jnp.float32)
  xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  return (xf * scale.astype(jnp.float32)).astype(x.dtype)


# --- parameters --------------------------------------------------------------


def _param(rngs, shape, axes, dtype, init="normal"):
  if init == "normal":
    value = 0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)
  elif init == "ones":
    value = jnp.ones(shape, jnp.float32)
  else:
    value = jnp.zeros(shape, jnp.float32)
  return nnx.Param(value.astype(dtype), axes=axes)


class Block(nnx.Module):
  """One decoder block: RMSNorm -> GQA attention -> RMSNorm -> SwiGLU MLP."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    D, F = cfg.hidden_size, cfg.intermediate_size
    H, K, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    p = lambda shape, axes, init="normal": _param(
        rngs, shape, axes, cfg.jnp_param_dtype, init)
    self.attn_norm = p((D,), ("norm",), "ones")
    self.q = p((D, H, Dh), ("embed", "q_heads", "head_dim"))
    self.k = p((D, K, Dh), ("embed", "kv_heads", "head_dim"))
    self.v = p((D, K, Dh), ("embed", "kv_heads", "head_dim"))
    self.o = p((H, Dh, D), ("q_heads", "head_dim", "embed"))
    if cfg.qkv_bias:
      self.q_bias = p((H, Dh), ("q_heads", "head_dim"), "zeros")
      self.k_bias = p((K, Dh), ("kv_heads", "head_dim"), "zeros")
      self.v_bias = p((K, Dh), ("kv_heads", "head_dim"), "zeros")
    if cfg.smear_keys:
      self.smear = p((K,), ("kv_heads",), "zeros")
    self.mlp_norm = p((D,), ("norm",), "ones")
    self.gate = p((D, F), ("embed", "mlp"))
    self.up = p((D, F), ("embed", "mlp"))
    self.down = p((F, D), ("mlp", "embed"))

  def __call__(self, x, positions, mask, inv_freq, cfg: ModelConfig,
               cache_kv=None, slots=None):
    """x: [B, T, D]; cache_kv: None or this layer's (keys [B, K, S, Dh],
    values [B, K, S, Dh], last) where `last` is None, or with smeared keys
    (the last real token's key [B, K, Dh], [B] whether the row has one).
    Returns (x, None or (keys, values, the new last key or None))."""
    dt = cfg.jnp_dtype
    h = rms_norm(x, self.attn_norm[...], cfg.rms_norm_eps)
    q = jnp.einsum("btd,dhk->bthk", h, self.q[...].astype(dt))
    k = jnp.einsum("btd,dhk->bthk", h, self.k[...].astype(dt))
    v = jnp.einsum("btd,dhk->bthk", h, self.v[...].astype(dt))
    if cfg.qkv_bias:
      q = q + self.q_bias[...].astype(dt)
      k = k + self.k_bias[...].astype(dt)
      v = v + self.v_bias[...].astype(dt)
    last_k = None
    if cfg.smear_keys:
      last = None if cache_kv is None else cache_kv[2]
      k, last_k = smear_keys(k, positions, self.smear[...], last)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    q = sharding.constrain(q, ("batch", "length", "act_heads", None))
    if cache_kv is not None:
      ck, cv = cache_kv[:2]
      # rows/slots index [B, T] around the head slice, so the update is laid
      # out [B, T, K, Dh]: exactly k's shape.
      rows = jnp.arange(k.shape[0])[:, None]
      ck = ck.at[rows, :, slots].set(k.astype(ck.dtype), mode="drop")
      cv = cv.at[rows, :, slots].set(v.astype(cv.dtype), mode="drop")
      cache_kv = (ck, cv, last_k)
      keys, values = ck.astype(dt), cv.astype(dt)
    else:
      keys, values = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    attn = _attention(q, keys, values, mask, causal=cache_kv is None)
    x = x + jnp.einsum("bthk,hkd->btd", attn, self.o[...].astype(dt))
    h = rms_norm(x, self.mlp_norm[...], cfg.rms_norm_eps)
    gate = jnp.einsum("btd,df->btf", h, self.gate[...].astype(dt))
    up = jnp.einsum("btd,df->btf", h, self.up[...].astype(dt))
    act = sharding.constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
    x = x + jnp.einsum("btf,fd->btd", act, self.down[...].astype(dt))
    x = sharding.constrain(x, ("batch", "length", "act_embed"))
    return x, cache_kv


def _run_block(block: Block, x, positions, mask, inv_freq, cfg, cache_kv, slots):
  return block(x, positions, mask, inv_freq, cfg, cache_kv, slots)


_run_block_remat = nnx.remat(_run_block, static_argnums=(5,))


class Decoder(nnx.Module):
  """Llama / Qwen2 decoder: embed -> L x (attention + SwiGLU) -> norm -> logits."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = cfg.jnp_param_dtype
    self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size),
                        ("vocab", "embed"), dt)
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
    self.final_norm = _param(rngs, (cfg.hidden_size,), ("norm",), dt, "ones")
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size),
                            ("embed", "vocab"), dt)

  def __call__(self, tokens: jax.Array, positions: jax.Array,
               cache: KVCache | None = None,
               return_hidden: bool = False, last_only: bool = False,
               logits_at: jax.Array | None = None):
    """Runs the decoder.

    Args:
      tokens: [B, T] int32 token ids.
      positions: [B, T] int32 positions; -1 marks padding (see module doc).
      cache: None for a plain causal pass over `tokens`; else a KVCache whose
        rows receive the T new tokens at slots `end[b] .. end[b] + T - 1`
        (padding tokens are written with position -1, so they are never
        attended to). Slots past the cache's length are dropped.
      return_hidden: also return the final hidden states [B, T, D].
      last_only: compute logits for the last token only ([B, 1, V]): a
        prefill needs no more, and the LM head is a large matmul.
      logits_at: [B] int32: compute logits only at this index of each row
        ([B, 1, V]), for right-padded chunks whose last real token varies.

    Returns:
      (logits [B, T, V] float32, cache) — the cache with the new tokens written
      and `end` advanced by T — and hidden states when asked.
    """
    cfg = self.cfg
    x = self.embed[...].astype(cfg.jnp_dtype)[tokens]
    x = sharding.constrain(x, ("batch", "length", "act_embed"))
    inv_freq = rope_inv_freq(cfg)
    if cache is not None:
      slots = cache.end[:, None] + jnp.arange(tokens.shape[1])[None, :]  # [B, T]
      has_last = jnp.any(cache.pos >= 0, axis=1) if cfg.smear_keys else None
      key_pos = _scatter_rows(cache.pos, slots, positions)
    else:
      slots, key_pos = None, positions
    # [B, T, S] attention mask, shared by every layer.
    mask = (key_pos[:, None, :] >= 0) & (key_pos[:, None, :] <= positions[:, :, None])
    run = _run_block_remat if cfg.remat else _run_block
    new_k, new_v, new_last = [], [], []
    # A Python loop over per-layer parameters: scanning over stacked layers
    # would copy every layer's weights (and cache) out of the stack at each
    # step, doubling the memory traffic of decoding on CPU.
    for i, block in enumerate(self.layers):
      layer_kv = None
      if cache is not None:
        last = (cache.last_k[i], has_last) if cfg.smear_keys else None
        layer_kv = (cache.k[i], cache.v[i], last)
      x, layer_kv = run(block, x, positions, mask, inv_freq, cfg, layer_kv, slots)
      if cache is not None:
        new_k.append(layer_kv[0])
        new_v.append(layer_kv[1])
        if cfg.smear_keys:
          new_last.append(layer_kv[2])
    x = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
    if logits_at is not None:
      last = jnp.take_along_axis(x, logits_at[:, None, None], axis=1)
    else:
      last = x[:, -1:] if last_only else x
    logits = self.logits(last)
    if cache is not None:
      cache = KVCache(k=tuple(new_k), v=tuple(new_v), pos=key_pos,
                      end=cache.end + tokens.shape[1], last_k=tuple(new_last))
    if return_hidden:
      return logits, cache, x
    return logits, cache

  def logits(self, x: jax.Array) -> jax.Array:
    """Final hidden states [B, T, D] -> float32 logits [B, T, V]."""
    dt = self.cfg.jnp_dtype
    if self.cfg.tie_embeddings:
      w = self.embed[...].astype(dt)
      out = jnp.einsum("btd,vd->btv", x, w, preferred_element_type=jnp.float32)
    else:
      w = self.lm_head[...].astype(dt)
      out = jnp.einsum("btd,dv->btv", x, w, preferred_element_type=jnp.float32)
    return sharding.constrain(out, ("batch", "length", "act_vocab"))


def _attention(q, k, v, mask, causal: bool = False):
  """Grouped-query attention. q: [B,T,H,Dh], k/v: [B,K,S,Dh], mask: [B,T,S].

  causal: key j is the token at index j of the same pass (S == T), so keys
    past a query's index are masked (positions increase along a row). Then
    query blocks of CAUSAL_BLOCK skip the keys past their end. Exact: every
    skipped score would have been masked.
  """
  b, t, h, dh = q.shape
  if causal and t > CAUSAL_BLOCK:
    outs = []
    for start in range(0, t, CAUSAL_BLOCK):
      end = min(start + CAUSAL_BLOCK, t)
      outs.append(_attention(q[:, start:end], k[:, :, :end], v[:, :, :end],
                             mask[:, start:end, :end]))
    return jnp.concatenate(outs, axis=1)
  kv = k.shape[1]
  q = q.reshape(b, t, kv, h // kv, dh)
  if t == 1:
    # Decoding: XLA:CPU runs these tiny batched matmuls (N = heads per group)
    # ~3x slower than a fused multiply-reduce that streams the cache once.
    qf = q[:, 0, :, :, None, :].astype(jnp.float32)  # [B, K, G, 1, Dh]
    scores = jnp.sum(qf * k[:, :, None].astype(jnp.float32), -1) / math.sqrt(dh)
    scores = jnp.where(mask[:, 0][:, None, None, :], scores, _NEG)  # [B,K,G,S]
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.sum(probs[..., None] * v[:, :, None].astype(jnp.float32), axis=-2)
    return out.astype(v.dtype).reshape(b, 1, h, dh)
  scores = jnp.einsum("btkgd,bksd->bkgts", q, k,
                      preferred_element_type=jnp.float32) / math.sqrt(dh)
  scores = jnp.where(mask[:, None, None, :, :], scores, _NEG)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bksd->btkgd", probs, v)
  return out.reshape(b, t, h, dh)


def _scatter_rows(buf: jax.Array, slots: jax.Array, values: jax.Array):
  """buf[b, slots[b, t]] = values[b, t]; slots past the end are dropped."""
  rows = jnp.arange(buf.shape[0])[:, None]
  return buf.at[rows, slots].set(values, mode="drop")


def resize_vocab(model: Decoder, new_vocab_size: int) -> Decoder:
  """Grows the embedding (and untied LM head) to `new_vocab_size` rows.

  New rows start at the mean of the existing ones, so added tag tokens begin
  as an "average token" rather than noise that would dominate the softmax.
  """
  cfg = model.cfg
  old = cfg.vocab_size
  if new_vocab_size < old:
    raise ValueError(f"resize_vocab: {new_vocab_size} < current {old}")
  if new_vocab_size == old:
    return model
  extra = new_vocab_size - old

  def grow(w, axis):
    mean = jnp.mean(w.astype(jnp.float32), axis=axis, keepdims=True)
    reps = [1] * w.ndim
    reps[axis] = extra
    return jnp.concatenate([w, jnp.tile(mean, reps).astype(w.dtype)], axis=axis)

  model.embed = nnx.Param(grow(model.embed[...], 0), axes=("vocab", "embed"))
  if not cfg.tie_embeddings:
    model.lm_head = nnx.Param(grow(model.lm_head[...], 1), axes=("embed", "vocab"))
  model.cfg = cfg.replace(vocab_size=new_vocab_size)
  return model
