"""Retrieval: one interface, three backends.

  Doc, Retriever                 a passage; `search(queries, k) -> list[list[Doc]]`
  BM25Retriever                  in-process BM25 (the embedded default)
  RoutedRetriever                one retriever per corpus, chosen per query
  HTTPRetriever                  client of a remote server (R1-Searcher's
                                 /queries or Search-R1's /retrieve protocol)
  serve, Limits                  serve any retriever on both protocols
                                 (launch/serve_retriever.py)
  load_corpus and the readers    Search-R1 JSONL, KILT pages, R1-Searcher TSV,
                                 the wiki-vital-en asset
  make_retriever(kind, **kw)     a backend from config fields
"""

from __future__ import annotations

import inspect

from rsearch_jax.retrieval._base import Doc, Retriever
from rsearch_jax.retrieval._bm25 import BM25Retriever
from rsearch_jax.retrieval._corpus import (load_corpus, read_jsonl_contents,
                                           read_kilt_pages, read_r1_tsv,
                                           read_wiki_vital, split_words)
from rsearch_jax.retrieval._http import HTTPRetriever, RetrieverRequestError
from rsearch_jax.retrieval._routed import RoutedRetriever
from rsearch_jax.retrieval._server import Limits, RetrieverServer, serve

__all__ = ["Doc", "Retriever", "BM25Retriever", "HTTPRetriever",
           "RoutedRetriever", "RetrieverRequestError", "serve", "Limits",
           "RetrieverServer",
           "load_corpus", "read_jsonl_contents", "read_kilt_pages",
           "read_r1_tsv", "read_wiki_vital", "split_words", "make_retriever"]

_KINDS = {"bm25": BM25Retriever.from_corpus, "http": HTTPRetriever}


def make_retriever(kind: str, **kw) -> Retriever:
  """A retriever from config fields.

  kind="bm25": corpus (a path or asset name), and optionally format, k1, b,
    cache (see BM25Retriever.from_corpus).
  kind="http": url, and optionally protocol ("r1searcher" | "search_r1"),
    timeout, retries, backoff (see HTTPRetriever).
  """
  if kind not in _KINDS:
    raise ValueError(f"retriever.kind={kind!r}: expected one of {sorted(_KINDS)}")
  required = "corpus" if kind == "bm25" else "url"
  if not kw.get(required):
    raise ValueError(f"retriever.{required} must be set for retriever.kind={kind!r}")
  make = _KINDS[kind]
  # from_corpus calls its corpus `spec`; configs say `corpus`.
  known = {"corpus" if p == "spec" else p for p in inspect.signature(make).parameters}
  unknown = sorted(set(kw) - known)
  if unknown:
    raise ValueError(f"retriever ({kind}): unknown fields {unknown}; "
                     f"known: {sorted(known)}")
  if kind == "bm25":
    return make(kw.pop("corpus"), **kw)
  return make(**kw)
