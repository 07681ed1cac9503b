"""Sampling with retrieval in the loop.

  Sampler, SamplerOutput        prompts in, search-interleaved rollouts out
  SamplingConfig                static settings (budgets, temperature, top-k/p)
  DocumentFormat                tags and budgets of the document block
  TagGrammar, grammar_for       leaf tags open one at a time, close matched
  RetrievalHandoff              the host callback (query -> document tokens)
  generate, decode_step, prefill, sample_token, token_logprobs
                                the jitted loop's parts
"""

from rsearch_jax.sampling._grammar import TagGrammar, apply_ban, grammar_for
from rsearch_jax.sampling._handoff import (DocumentFormat, RetrievalHandoff,
                                           SearchRecord)
from rsearch_jax.sampling._loop import (decode_step, generate, prefill,
                                        sample_token, token_logprobs)
from rsearch_jax.sampling._sampler import Sampler, SamplerOutput
from rsearch_jax.sampling._state import (SamplingConfig, SamplingState,
                                         StopTokens)

__all__ = [
    "Sampler", "SamplerOutput", "SamplingConfig", "SamplingState", "StopTokens",
    "DocumentFormat", "RetrievalHandoff", "SearchRecord", "generate",
    "decode_step", "prefill", "sample_token", "token_logprobs", "TagGrammar",
    "apply_ban", "grammar_for",
]
