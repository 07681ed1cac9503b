"""The user-facing sampler: prompts in, search-interleaved rollouts out.

    sampler = Sampler(model, tokenizer, SamplingConfig(...), retriever=bm25)
    out = sampler(["Who directed ...?"], seed=0)
    out.texts[0], out.loss_mask, out.logprobs, out.searches[0]

The model's parameters are read at every call, so a trainer can update them
between calls without recompiling.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from rsearch_jax import sharding as sharding_lib
from rsearch_jax.models import Decoder
from rsearch_jax.sampling._grammar import TagGrammar
from rsearch_jax.sampling._handoff import (DocumentFormat, RetrievalHandoff,
                                           SearchRecord)
from rsearch_jax.sampling._loop import generate, make_device_handoff
from rsearch_jax.sampling._state import (STOP_REASONS, SamplingConfig,
                                         StopTokens)
from rsearch_jax.tokenizer import Tokenizer


@dataclasses.dataclass
class SamplerOutput:
  """One batch of rollouts (host numpy arrays). T = max_len slots.

  Attributes:
    tokens: [B, T] int32; prompt left-padded into slots [0, prompt_len).
    loss_mask: [B, T] int32; 1 exactly on the tokens the policy sampled.
    logprobs: [B, T] float32; log-prob of each sampled token, 0 elsewhere.
    positions: [B, T] int32; -1 on padding (feed to the model as is).
    lengths: [B] int32; slots used (prompt padding included).
    prompt_len: P, the padded prompt length.
    num_searches: [B] int32 retrievals run.
    stop_reasons: per row, "stop" (EOS / </answer>), "budget" (max_new_tokens)
      or "length" (max_len).
    searches: per row, its SearchRecords (query, documents, ran).
    texts: per row, the decoded completion (sampled tokens and documents).
  """

  tokens: np.ndarray
  loss_mask: np.ndarray
  logprobs: np.ndarray
  positions: np.ndarray
  lengths: np.ndarray
  prompt_len: int
  num_searches: np.ndarray
  stop_reasons: list[str]
  searches: list[list[SearchRecord]]
  texts: list[str]

  def segments(self, i: int, tokenizer: Tokenizer) -> list[tuple[str, bool]]:
    """Row i's completion as (text, retrieved) runs: retrieved is True on the
    document blocks the retriever inserted (loss_mask 0 after the prompt)."""
    out: list[tuple[str, bool]] = []
    start = self.prompt_len
    end = int(self.lengths[i])
    mask = self.loss_mask[i]
    while start < end:
      stop = start
      while stop < end and mask[stop] == mask[start]:
        stop += 1
      out.append((tokenizer.decode(self.tokens[i, start:stop].tolist()),
                  bool(mask[start] == 0)))
      start = stop
    return out

  def summary(self) -> str:
    """One line: rows, stop reasons, retrievals, sampled tokens."""
    reasons = {r: self.stop_reasons.count(r) for r in sorted(set(self.stop_reasons))}
    sampled = int(self.loss_mask.sum())
    return (f"{len(self.texts)} rollouts, stop reasons {reasons}, "
            f"{self.num_searches.sum()} retrievals "
            f"({self.num_searches.mean():.2f} per rollout), {sampled} sampled tokens")


class Sampler:
  """Batched sampling with retrieval in the loop.

  Args:
    model: the policy (a Decoder, possibly sharded).
    tokenizer: its tokenizer; tag strings must be known to it.
    config: static sampling settings.
    retriever: anything with `search(queries, k) -> list[list[Doc]]`; None
      disables the hand-off (the query tag is then an ordinary token).
    doc_format: tags and budgets of the document block.
    stop_tags: strings that end a row besides EOS (default `</answer>`).
    grammar: leaf tags that must open one at a time and close with their own
      tag (`grammar_for`); None samples from the model's distribution as is.
    mesh, rules: shard the batch over the mesh's batch axes.
  """

  def __init__(self, model: Decoder, tokenizer: Tokenizer,
               config: SamplingConfig, *, retriever=None,
               doc_format: DocumentFormat | None = None,
               stop_tags: Sequence[str] = ("</answer>",),
               grammar: TagGrammar | None = None, mesh=None,
               rules=sharding_lib.DEFAULT_RULES):
    self.model = model
    self.grammar = grammar
    self.tokenizer = tokenizer
    self.config = config
    self.mesh = mesh
    self.rules = rules
    fmt = doc_format or DocumentFormat(block_len=config.doc_block_len)
    if fmt.block_len != config.doc_block_len:
      fmt = dataclasses.replace(fmt, block_len=config.doc_block_len)
    stop = [seq for t in stop_tags for seq in _match_ids(tokenizer, t)]
    if tokenizer.eos_id is not None:
      stop.append((tokenizer.eos_id,))
    self.stops = StopTokens(
        stop=tuple(stop),
        query_end=_match_ids(tokenizer, fmt.query_end),
        pad_id=tokenizer.pad_id)
    self.handoff = (RetrievalHandoff(retriever, tokenizer, fmt,
                                     config.max_searches)
                    if retriever is not None else None)
    self.batch_axes: tuple[str, ...] = ()
    if mesh is not None:
      self.batch_axes = tuple(a for a in rules["batch"]
                              if a in mesh.shape and mesh.shape[a] > 1)
    self._device_handoff = (
        make_device_handoff(self.handoff, config, mesh, self.batch_axes)
        if self.handoff is not None else None)

  def _batch_sharding(self):
    if self.mesh is None:
      return None
    return NamedSharding(self.mesh, PartitionSpec(self.batch_axes or None))

  def encode_prompts(self, prompts: Sequence[str | Sequence[int]]):
    """Left-pads prompts to max_prompt_len: ([B, P] tokens, [B, P] mask)."""
    p = self.config.max_prompt_len
    tokens = np.full((len(prompts), p), self.tokenizer.pad_id, np.int32)
    mask = np.zeros((len(prompts), p), np.int32)
    for i, prompt in enumerate(prompts):
      ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
      if not ids:
        raise ValueError(f"prompt {i} is empty")
      if len(ids) > p:
        raise ValueError(
            f"prompt {i} has {len(ids)} tokens; max_prompt_len is {p}")
      tokens[i, p - len(ids):] = ids
      mask[i, p - len(ids):] = 1
    return tokens, mask

  def __call__(self, prompts: Sequence[str | Sequence[int]],
               seed: int | jax.Array = 0,
               corpora: Sequence[str] | None = None) -> SamplerOutput:
    """Samples a completion of each prompt; `corpora[i]` names the corpus
    prompt i's searches read (a `retrieval.RoutedRetriever` key)."""
    if corpora is not None and len(corpora) != len(prompts):
      raise ValueError(f"{len(prompts)} prompts but {len(corpora)} corpora")
    if corpora is not None and self.handoff is None:
      raise ValueError("corpora given to a sampler without a retriever")
    tokens, mask = self.encode_prompts(prompts)
    b = tokens.shape[0]
    rng = jax.random.key(seed) if isinstance(seed, int) else seed
    row_ids = np.arange(b, dtype=np.int32)
    shard = self._batch_sharding()
    if shard is not None:
      tokens, mask, row_ids = (jax.device_put(x, shard)
                               for x in (tokens, mask, row_ids))
    if self.handoff is not None:
      self.handoff.reset(corpora)
    graphdef, params = nnx.split(self.model)
    ctx = (sharding_lib.use_mesh(self.mesh, self.rules)
           if self.mesh is not None else contextlib.nullcontext())
    with ctx:
      state = generate(graphdef, params, jnp.asarray(tokens),
                       jnp.asarray(mask), rng, jnp.asarray(row_ids),
                       config=self.config, stops=self.stops,
                       handoff=self._device_handoff, batch_sharding=shard,
                       grammar=self.grammar)
    return self._output(state, int(tokens.shape[1]))

  def _output(self, state, prompt_len: int) -> SamplerOutput:
    def get(x):
      # On a multi-host mesh every process gets the whole batch (the rows it
      # does not hold are gathered from the others).
      if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = multihost_utils.process_allgather(x, tiled=True)
      return np.asarray(jax.device_get(x))

    tokens, loss_mask, logprobs = get(state.tokens), get(state.loss_mask), get(
        state.logprobs)
    lengths = get(state.cursor)
    pos = get(state.cache.pos)
    positions = np.where(np.arange(tokens.shape[1])[None] < lengths[:, None],
                         pos, -1).astype(np.int32)
    searches = [list(self.handoff.log.get(i, [])) if self.handoff else []
                for i in range(tokens.shape[0])]
    texts = [self.tokenizer.decode(tokens[i, prompt_len:lengths[i]].tolist())
             for i in range(tokens.shape[0])]
    return SamplerOutput(
        tokens=tokens, loss_mask=loss_mask, logprobs=logprobs,
        positions=positions, lengths=lengths, prompt_len=prompt_len,
        num_searches=get(state.num_searches),
        stop_reasons=[STOP_REASONS[int(r)] for r in get(state.stop_reason)],
        searches=searches, texts=texts)



def _match_ids(tokenizer: Tokenizer, tag: str) -> tuple[tuple[int, ...], ...]:
  """The id sequences the loop watches for to detect `tag` as a suffix.

  A tag that is one token is that token. A tag the tokenizer spells with
  several tokens (an imported BPE that keeps tags as text) may start with a
  token merged with the text before it (SmolLM2: "<|end_of_query|>" starts
  with "<", " <" or ")<"). Its tail without that first token is watched when
  no other tag ends with the same text ("|end_of_query|>"); otherwise
  ("answer>" ends "<answer>" too) the spellings after common prefixes are.
  """
  from rsearch_jax.tokenizer import TAGS
  ids = tuple(tokenizer.tag_token_ids(tag))
  if len(ids) == 1:
    return (ids,)
  tail = ids[1:]
  text = tokenizer.decode(list(tail))
  if len(tail) >= 2 and not any(o != tag and o.endswith(text) for o in TAGS):
    return (tail,)
  variants = {ids}
  for prefix in (" ", "\n", ".", ")", "x"):
    pre, enc = tokenizer.encode(prefix), tokenizer.encode(prefix + tag)
    cut = len(pre) if enc[:len(pre)] == pre else len(pre) - 1
    variants.add(tuple(enc[max(cut, 0):]))
  return tuple(sorted(variants))
