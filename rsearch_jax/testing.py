"""Small deterministic stand-ins for tests and examples.

  CharTokenizer       characters + the 14 tags, ~60 ids: a random model emits
                      tags often, so search paths are exercised quickly.
  DictRetriever       a retriever that answers from a fixed table (or echoes
                      the query), deterministically.
  tiny_model(...)     a small random Decoder, optionally biased to emit chosen
                      tokens (e.g. the query tag) often under greedy decoding.
  randomize_smear(m)  distinct smeared-keys weights per head and layer.
"""

from __future__ import annotations

import string
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rsearch_jax import models
from rsearch_jax.retrieval import Doc
from rsearch_jax.tokenizer import TAGS, Tokenizer

_SPECIALS = ("<pad>", "<bos>", "<eos>")
_CHARS = string.ascii_lowercase + string.digits + " .,?()\n"


class CharTokenizer(Tokenizer):
  """One id per special token, per tag and per character of a small alphabet;
  other characters are dropped (tests only use the alphabet)."""

  def __init__(self):
    self._pieces = list(_SPECIALS) + list(TAGS) + list(_CHARS)
    self._ids = {p: i for i, p in enumerate(self._pieces)}

  @property
  def vocab_size(self) -> int:
    return len(self._pieces)

  @property
  def bos_id(self):
    return 1

  @property
  def eos_id(self):
    return 2

  @property
  def pad_id(self) -> int:
    return 0

  @property
  def tag_ids(self) -> dict[str, int]:
    return {t: self._ids[t] for t in TAGS}

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    ids, i = [], 0
    while i < len(text):
      for tag in TAGS:
        if text.startswith(tag, i):
          ids.append(self._ids[tag])
          i += len(tag)
          break
      else:
        if text[i] in self._ids:
          ids.append(self._ids[text[i]])
        i += 1
    return self._with_bos(ids, add_bos)

  def decode(self, ids: Sequence[int]) -> str:
    return "".join(self._pieces[i] for i in ids if i >= len(_SPECIALS))


class DictRetriever:
  """Deterministic retriever: `table[query]` if present, else k documents that
  echo the query (so tests can check which query reached the retriever)."""

  def __init__(self, table: dict[str, list[Doc]] | None = None):
    self.table = table or {}
    self.calls: list[list[str]] = []

  def search(self, queries: list[str], k: int) -> list[list[Doc]]:
    self.calls.append(list(queries))
    out = []
    for q in queries:
      if not q.strip():
        out.append([])
      elif q in self.table:
        out.append(self.table[q][:k])
      else:
        out.append([Doc(id=f"{q}#{j}", title="", text=f"doc {j} about {q}")
                    for j in range(k)])
    return out


def randomize_smear(model: models.Decoder, seed: int = 0) -> models.Decoder:
  """Distinct smeared-keys weights per head and layer (they all start at
  0.5), so a test sees each head mix its own share of the previous key."""
  rng = np.random.default_rng(seed)
  for block in model.layers:
    block.smear.set_value(jnp.asarray(
        rng.normal(0, 1.5, block.smear[...].shape), jnp.float32))
  return model


def tiny_model(vocab_size: int, *, seed: int = 0, layers: int = 2,
               favour: Sequence[int] = (), strength: float = 3.0,
               **overrides) -> models.Decoder:
  """A small random decoder; token ids in `favour` get a larger LM-head
  column so that greedy decoding picks them for a good share of contexts."""
  cfg = models.ModelConfig(vocab_size=vocab_size, hidden_size=64,
                           intermediate_size=128, num_layers=layers,
                           num_heads=4, num_kv_heads=2, **overrides)
  model = models.Decoder(cfg, rngs=nnx.Rngs(seed))
  if favour:
    head = model.lm_head[...]
    keys = jax.random.split(jax.random.key(seed + 1), len(favour))
    for key, tok in zip(keys, favour):
      head = head.at[:, tok].set(strength * jax.random.normal(
          key, (cfg.hidden_size,), head.dtype))
    model.lm_head.set_value(jnp.asarray(head))
  return model
