"""What the decode loop carries from one step to the next, and its settings."""

from __future__ import annotations

import dataclasses

import jax

from rsearch_jax.models import KVCache

# Why a row stopped (SamplingState.stop_reason).
RUNNING, STOPPED, BUDGET, LENGTH = 0, 1, 2, 3
STOP_REASONS = {RUNNING: "running", STOPPED: "stop", BUDGET: "budget",
                LENGTH: "length"}


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Static settings of one sampler (changing one recompiles).

  Attributes:
    max_prompt_len: prompts are left-padded (or refused) to this length.
    max_len: slots per row for prompt + sampled tokens + documents; the KV
      cache and the token buffer have this length.
    max_new_tokens: budget of *sampled* tokens per row (documents not counted).
    temperature: 0 for greedy; otherwise logits are divided by it.
    top_k: keep the k most likely tokens (0: all).
    top_p: nucleus sampling mass (1.0: all).
    max_searches: retrievals per row; past it the query is not run and the
      row is told so in the document block.
    doc_block_len: fixed length of the document block returned by the host.
    splice_rows: asking rows (per batch shard) whose document blocks go
      through the model in one forward pass; more rows asking at once take
      several passes. 1 costs exactly the asking rows' own prefill: a block
      is already a long chunk.
  """

  max_prompt_len: int
  max_len: int
  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_searches: int = 8
  doc_block_len: int = 256
  splice_rows: int = 1

  def __post_init__(self):
    if self.max_len <= self.max_prompt_len:
      raise ValueError(
          f"sampling: max_len={self.max_len} must exceed "
          f"max_prompt_len={self.max_prompt_len}")
    if self.splice_rows < 1:
      raise ValueError(f"sampling: splice_rows={self.splice_rows} must be >= 1")
    if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
      raise ValueError(
          f"sampling: bad temperature={self.temperature} / top_k={self.top_k}"
          f" / top_p={self.top_p}")


@dataclasses.dataclass(frozen=True)
class StopTokens:
  """Token sequences the loop watches for (static, hashable).

  A tag that the tokenizer keeps as one piece is a 1-tuple; an imported
  tokenizer that splits a tag gives a longer tuple, matched as a suffix of
  what the row has sampled.

  Attributes:
    stop: sequences that end a row (EOS, `</answer>`).
    query_end: the spellings of the closing query tag (`<|end_of_query|>`
      or `</external>`): the row pauses for retrieval (the host finds the
      query in text).
    pad_id: filler for empty slots.
  """

  stop: tuple[tuple[int, ...], ...]
  query_end: tuple[tuple[int, ...], ...] | None
  pad_id: int


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingState:
  """The decode loop's carry. B rows, T = max_len slots.

  A row's token i sits in slot i of `tokens` and of the KV cache; prompts are
  left-padded to max_prompt_len, after which rows advance independently:

    slot        0    1    2    3    4    5    6    7
    tokens    [pad  Who  is   ?    <q>  X   </q> <d> ...]
    loss_mask [ 0    0    0    0    1    1    1    0  ...]   (1: sampled)
    cursor = 8 (next slot to write)

  Attributes:
    tokens: [B, T] int32 every token of every row.
    loss_mask: [B, T] int32, 1 where the policy sampled the token.
    logprobs: [B, T] float32 log-prob of each sampled token (0 elsewhere).
    cursor: [B] int32 next slot to write.
    next_pos: [B] int32 position of the next token (slots minus left pad).
    cache: the KV cache, written at `cursor`.
    logits: [B, V] float32 logits for each row's next token.
    done: [B] bool.
    stop_reason: [B] int32 (RUNNING, STOPPED, BUDGET, LENGTH).
    num_sampled: [B] int32 sampled tokens so far.
    num_searches: [B] int32 retrievals run.
    open_leaf: [B] int32 the leaf span the row has open under the tag
      grammar (NO_LEAF: none; rsearch_jax.sampling._grammar).
    rng: PRNG key.
    step: int32 loop counter.
  """

  tokens: jax.Array
  loss_mask: jax.Array
  logprobs: jax.Array
  cursor: jax.Array
  next_pos: jax.Array
  cache: KVCache
  logits: jax.Array
  done: jax.Array
  stop_reason: jax.Array
  num_sampled: jax.Array
  num_searches: jax.Array
  open_leaf: jax.Array
  rng: jax.Array
  step: jax.Array
