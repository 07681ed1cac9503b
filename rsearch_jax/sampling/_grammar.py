"""The tag grammar: leaf spans open one at a time and close with their own tag.

A method's leaf spans are the answer, the search query and (R1-Searcher++)
the recalled knowledge: `<answer> ... </answer>`, `<external> ... </external>`,
`<internal> ... </internal>`. A small policy mixes them up, e.g. opens
`<internal>` and closes it with `</external>`, which both wastes a retrieval
and makes the rollout malformed. With a `TagGrammar`, the sampler gives zero
probability to

  - a leaf's opening tag while any leaf span is open, and
  - a leaf's closing tag unless that leaf's span is the open one,

and the RL loss scores the same tokens under the same constraint, so the
sampler's log-probs and the learner's agree (the constrained distribution
is the policy). Only the policy's own (sampled) tokens move the state:
documents the retriever inserts never do. Every tag must be one token.

  grammar_for(tokenizer, pairs)         -> TagGrammar (or a clear error)
  TagGrammar.step_bias(open_leaf)       [B] state -> [B, V] logit bias
  TagGrammar.advance(open_leaf, token, active)   the state after a token
  TagGrammar.banned(tokens, sampled)    [B, T] -> [B, T, K] for the learner
  apply_ban(logits, banned, ids)        the learner's logits, constrained
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

# Added to a banned token's logit: exp underflows to exactly 0 in float32,
# and unlike -inf it keeps p * log p (the entropy) at 0 rather than NaN.
BANNED = -1e9
NO_LEAF = -1


@dataclasses.dataclass(frozen=True)
class TagGrammar:
  """Leaf span tags as (open id, close id) pairs (static, hashable)."""

  pairs: tuple[tuple[int, int], ...]

  @property
  def ids(self) -> tuple[int, ...]:
    """The K = 2 * len(pairs) controlled ids: every open, then every close."""
    return tuple(o for o, _ in self.pairs) + tuple(c for _, c in self.pairs)

  def _allowed(self, open_leaf: jax.Array) -> jax.Array:
    """[...] leaf index (NO_LEAF: none open) -> [..., K] bool, per `ids`."""
    n = len(self.pairs)
    leaf = jnp.arange(n)
    none_open = (open_leaf == NO_LEAF)[..., None]
    opens = jnp.broadcast_to(none_open, open_leaf.shape + (n,))
    closes = open_leaf[..., None] == leaf
    return jnp.concatenate([opens, closes], axis=-1)

  def step_bias(self, open_leaf: jax.Array, vocab_size: int) -> jax.Array:
    """[B] state -> [B, V] additive logit bias (0, or BANNED on banned tags)."""
    b = open_leaf.shape[0]
    bias = jnp.where(self._allowed(open_leaf), 0.0, BANNED)
    return jnp.zeros((b, vocab_size), jnp.float32).at[
        :, jnp.asarray(self.ids)].set(bias)

  def advance(self, open_leaf: jax.Array, token: jax.Array,
              active: jax.Array) -> jax.Array:
    """The state after each active row sampled `token` ([B] each)."""
    out = open_leaf
    for k, (o, c) in enumerate(self.pairs):
      out = jnp.where(active & (token == o), k, out)
      out = jnp.where(active & (token == c), NO_LEAF, out)
    return out

  def banned(self, tokens: jax.Array, sampled: jax.Array) -> jax.Array:
    """[B, T] tokens and sampled mask -> [B, T, K] bool: out[:, t, j] says
    that ids[j] was banned from the distribution token t was drawn from
    (the state after the sampled tokens before t)."""
    t = tokens.shape[1]
    slot = jnp.arange(t)[None, :]
    sampled = sampled > 0
    open_leaf = jnp.full(tokens.shape, NO_LEAF, jnp.int32)
    latest = jnp.full(tokens.shape, -1, jnp.int32)  # slot of the last leaf tag
    for k, (o, c) in enumerate(self.pairs):
      # Last sampled open / close of leaf k strictly before each slot.
      last_open = _last_before(sampled & (tokens == o), slot)
      last_close = _last_before(sampled & (tokens == c), slot)
      is_open = last_open > last_close
      # Under the grammar one leaf is open at a time; the latest open wins.
      newer = is_open & (last_open > latest)
      open_leaf = jnp.where(newer, k, open_leaf)
      latest = jnp.where(newer, last_open, latest)
    return ~self._allowed(open_leaf)


def _last_before(hit: jax.Array, slot: jax.Array) -> jax.Array:
  """[B, T] bool -> [B, T]: the largest s < t with hit[s], else -1."""
  at = jnp.where(hit, slot, -1)
  upto = jax.lax.cummax(at, axis=1)  # largest s <= t
  return jnp.pad(upto[:, :-1], ((0, 0), (1, 0)), constant_values=-1)


def apply_ban(logits: jax.Array, banned: jax.Array,
              ids: Sequence[int]) -> jax.Array:
  """[..., V] logits with BANNED added where [..., K] `banned` is set."""
  add = jnp.where(banned, BANNED, 0.0).astype(logits.dtype)
  return logits.at[..., jnp.asarray(ids)].add(add)


def grammar_for(tokenizer, pairs: Sequence[tuple[str, str]]) -> TagGrammar:
  """The grammar over `pairs` of tag strings, each of which must be one token.

  Raises:
    ValueError naming the tag the tokenizer splits (an imported tokenizer
    without the tags as tokens: set model.add_tags=True, or switch the
    grammar off with sampling.tag_grammar=False).
  """
  out = []
  for pair in pairs:
    ids = []
    for tag in pair:
      got = tokenizer.tag_token_ids(tag)
      if len(got) != 1:
        raise ValueError(
            f"sampling.tag_grammar: the tag {tag!r} is {len(got)} tokens "
            f"{got} for this tokenizer; the grammar needs every tag as one "
            "token (model.add_tags=True), or set sampling.tag_grammar=False")
      ids.append(got[0])
    out.append((ids[0], ids[1]))
  return TagGrammar(tuple(out))
