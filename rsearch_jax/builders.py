"""Builds the objects a run needs from the fields of its config.

Main entry points:
  resolve_path(spec)                        "asset:NAME" or a local path -> Path
  load_policy(path, *, dtype, ...)          (Decoder, Tokenizer) from local weights,
                                            with the search tags as single tokens
  build_retriever(kind, corpus=, url=, ...) a retrieval backend
  policy_from_config(cfg, mesh) / retriever_from_config(cfg)   the same, from
                                            a run config's model.* / retriever.*
  build_sampler(model, tok, sampling, ...)  the search-in-the-loop Sampler
  tag_grammar(tok, method)                  the method's leaf-tag grammar
  grammar_from_config(tok, sampling, method)  the same if sampling.tag_grammar

Launchers (`launch/*.py`) parse a config and call these; library code below
them takes explicit arguments, never the whole config.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

from rsearch_jax import assets, models, prompts, rewards
from rsearch_jax import sharding as sharding_lib
from rsearch_jax import tokenizer as tokenizer_lib
from rsearch_jax.sampling import (DocumentFormat, Sampler, SamplingConfig,
                                  TagGrammar, grammar_for)


def resolve_path(spec: str, *, field: str = "path") -> pathlib.Path:
  """`asset:NAME` (fetched into the cache on first use) or a local path.

  Raises:
    FileNotFoundError: naming `field` when a local path does not exist.
    KeyError: an unknown asset name (the message lists the known ones).
  """
  if spec.startswith("asset:"):
    return assets.fetch(spec[len("asset:"):], quiet=True)
  path = pathlib.Path(spec).expanduser()
  if not path.exists():
    raise FileNotFoundError(f"{field}={spec!r}: no such file or directory")
  return path


def load_policy(path: str | pathlib.Path, *, dtype: str = "float32",
                param_dtype: str = "float32", remat: bool = False,
                add_tags: bool = True, mesh=None,
                rules=sharding_lib.DEFAULT_RULES):
  """A policy and its tokenizer from a GGUF file or an HF directory.

  With `add_tags`, tags the tokenizer lacks are added as special tokens and
  the embedding grows to match (new rows at the mean embedding), so every tag
  is one id: the choice for training. Without, tags stay plain text that a
  pretrained model already knows how to write (as R1-Searcher prompts Qwen);
  the sampler then matches them as token suffixes.
  """
  path = pathlib.Path(path)
  tok = tokenizer_lib.load_tokenizer(path)
  model, _ = models.load_pretrained(path, mesh=mesh, rules=rules, dtype=dtype,
                                    param_dtype=param_dtype, remat=remat)
  if add_tags and isinstance(tok, tokenizer_lib.BPETokenizer) and len(
      tok.tag_ids) < len(tokenizer_lib.TAGS):
    tok.add_tags()
  if tok.vocab_size > model.cfg.vocab_size:
    models.resize_vocab(model, tok.vocab_size)
    if mesh is not None:
      sharding_lib.shard_module(model, mesh, rules)
  return model, tok


def build_retriever(kind: str, *, corpus: str = "", url: str = "",
                    protocol: str = "r1searcher"):
  """`bm25` over a corpus (a path or `asset:NAME`), `http` to a server, or
  `none` (no retrieval: the query tag is an ordinary token)."""
  if kind == "none":
    return None
  from rsearch_jax import retrieval  # bm25s is slow to import
  if kind == "bm25":
    return retrieval.make_retriever("bm25", corpus=corpus)
  return retrieval.make_retriever(kind, url=url, protocol=protocol)


def policy_from_config(cfg, mesh=None):
  """`load_policy` from a run config's `model.*` fields."""
  m = cfg.model
  return load_policy(resolve_path(m.path, field="model.path"), dtype=m.dtype,
                     param_dtype=m.param_dtype, remat=m.remat,
                     add_tags=m.add_tags, mesh=mesh)


def retriever_from_config(cfg):
  """`build_retriever` from a run config's `retriever.*` fields."""
  r = cfg.retriever
  return build_retriever(r.kind, corpus=r.corpus, url=r.url, protocol=r.protocol)


def sampling_config(fields: Mapping[str, Any]) -> SamplingConfig:
  """SamplingConfig from a config section (unknown fields are an error)."""
  known = set(SamplingConfig.__dataclass_fields__)
  extra = sorted(set(fields) - known - {"top_k_docs", "doc_tokens",
                                        "tag_grammar"})
  if extra:
    raise ValueError(f"sampling: unknown fields {extra}; known: {sorted(known)}")
  return SamplingConfig(**{k: v for k, v in fields.items() if k in known})


def build_sampler(model, tok, sampling: Mapping[str, Any], *, retriever,
                  method: str = "r1", mesh=None,
                  rules=sharding_lib.DEFAULT_RULES) -> Sampler:
  """The sampler for `method`'s tags, with the documents' top-k and budget."""
  if method not in prompts.METHOD_TAGS:
    raise ValueError(
        f"method={method!r}: expected one of {sorted(prompts.METHOD_TAGS)}")
  tags = prompts.METHOD_TAGS[method]
  config = sampling_config(sampling)
  fmt = DocumentFormat(query_begin=tags.query_begin, query_end=tags.query_end,
                       docs_begin=tags.docs_begin, docs_end=tags.docs_end,
                       top_k=int(sampling.get("top_k_docs", 3)),
                       doc_tokens=int(sampling.get("doc_tokens", 64)),
                       block_len=config.doc_block_len)
  return Sampler(model, tok, config, retriever=retriever, doc_format=fmt,
                 grammar=grammar_from_config(tok, sampling, method),
                 mesh=mesh, rules=rules)


def grammar_from_config(tok, sampling: Mapping[str, Any],
                        method: str) -> TagGrammar | None:
  """`tag_grammar(tok, method)` when `sampling.tag_grammar` is set, else None
  (the sampler and the RL loss both take theirs from here)."""
  return tag_grammar(tok, method) if sampling.get("tag_grammar", False) else None


def tag_grammar(tok, method: str) -> TagGrammar:
  """The grammar over `method`'s leaf spans: the answer, the query and (r1pp)
  the recalled knowledge open one at a time and close with their own tag."""
  tags = rewards.METHOD_TAGSETS[method]
  leaves = [tags.answer, tags.query] + (
      [tags.internal] if tags.internal is not None else [])
  return grammar_for(tok, leaves)
