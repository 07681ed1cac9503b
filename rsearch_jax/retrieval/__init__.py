"""Retrieval: one interface, three backends.

  Doc, Retriever                 a passage; `search(queries, k) -> list[list[Doc]]`
  BM25Retriever                  in-process BM25 (the embedded default)
  HTTPRetriever                  client of a remote server (R1-Searcher's
                                 /queries or Search-R1's /retrieve protocol)
  serve, Limits                  serve any retriever on both protocols
                                 (launch/serve_retriever.py)
  load_corpus and the readers    Search-R1 JSONL, KILT pages, R1-Searcher TSV,
                                 the wiki-vital-en asset
"""

from rsearch_jax.retrieval._base import Doc, Retriever
from rsearch_jax.retrieval._bm25 import BM25Retriever
from rsearch_jax.retrieval._corpus import (load_corpus, read_jsonl_contents,
                                           read_kilt_pages, read_r1_tsv,
                                           read_wiki_vital, split_words)
from rsearch_jax.retrieval._http import HTTPRetriever
from rsearch_jax.retrieval._server import Limits, serve

__all__ = ["Doc", "Retriever", "BM25Retriever", "HTTPRetriever", "serve",
           "Limits", "load_corpus", "read_jsonl_contents", "read_kilt_pages",
           "read_r1_tsv", "read_wiki_vital", "split_words"]
