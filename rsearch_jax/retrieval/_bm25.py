"""In-process BM25 over a list of passages: the embedded default retriever.

Main entry point:
  BM25Retriever(docs)                      index in memory
  BM25Retriever.from_corpus(spec)          read a corpus (load_corpus), and
                                           reuse / write the index cached on
                                           disk next to it

Built on `bm25s` (sparse scores precomputed at index time: ~1 ms a query over
tens of thousands of passages) with English stopwords and the Snowball
stemmer. The cache folder is named after the corpus file and a hash of its
passages, so a changed corpus never reuses a stale index; when the corpus
folder is read-only the cache goes to `$RSEARCH_CACHE/bm25/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
import threading
from typing import Sequence

import numpy as np

from rsearch_jax import assets
from rsearch_jax.retrieval._base import Doc, Retriever
from rsearch_jax.retrieval._corpus import load_corpus

_FORMAT_VERSION = 1


def _tokenize(texts: Sequence[str], stemmer):
  import bm25s
  return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer,
                        return_ids=False, show_progress=False)


def corpus_hash(docs: Sequence[Doc]) -> str:
  h = hashlib.sha256(f"v{_FORMAT_VERSION}".encode())
  for d in docs:
    h.update(d.id.encode())
    h.update(b"\0")
    h.update(d.contents().encode())
    h.update(b"\1")
  return h.hexdigest()[:16]


class BM25Retriever(Retriever):
  """BM25 (k1=1.5, b=0.75, Lucene's idf) over `docs`; thread-safe search."""

  def __init__(self, docs: Sequence[Doc], *, k1: float = 1.5, b: float = 0.75,
               _index=None):
    import bm25s
    import Stemmer
    if not docs:
      raise ValueError("BM25Retriever: the corpus is empty")
    self.docs = list(docs)
    self._stemmer = Stemmer.Stemmer("english")
    self._lock = threading.Lock()
    if _index is None:
      _index = bm25s.BM25(k1=k1, b=b)
      _index.index(_tokenize([d.contents() for d in self.docs], self._stemmer),
                   show_progress=False)
    self._index = _index

  @classmethod
  def from_corpus(cls, spec: str | os.PathLike, *, format: str | None = None,
                  cache: bool = True) -> "BM25Retriever":
    docs = load_corpus(spec, format)
    if not cache:
      return cls(docs)
    folder = _cache_folder(str(spec), docs)
    if (folder / "meta.json").is_file():
      import bm25s
      try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("num_docs") == len(docs):
          return cls(docs, _index=bm25s.BM25.load(str(folder)))
      except Exception:  # a damaged cache is rebuilt, never trusted
        pass
    retriever = cls(docs)
    retriever.save_index(folder)
    return retriever

  def save_index(self, folder: pathlib.Path) -> None:
    tmp = folder.with_name(folder.name + f".partial{os.getpid()}")
    self._index.save(str(tmp))
    (tmp / "meta.json").write_text(json.dumps({"num_docs": len(self.docs)}))
    if folder.exists():
      import shutil
      shutil.rmtree(folder)
    tmp.rename(folder)  # atomic: a half-written index is never picked up

  def search(self, queries: list[str], k: int) -> list[list[Doc]]:
    out: list[list[Doc]] = [[] for _ in queries]
    k = min(k, len(self.docs))
    tokens = _tokenize(queries, self._stemmer) if queries else []
    live = [i for i, t in enumerate(tokens) if t]
    if not live or k <= 0:
      return out
    with self._lock:
      ids, scores = self._index.retrieve([tokens[i] for i in live], k=k,
                                         show_progress=False, n_threads=1)
    for row, i in enumerate(live):
      out[i] = [self.docs[j] for j, s in zip(ids[row], scores[row]) if s > 0]
    return out

  def scores(self, query: str) -> np.ndarray:
    """BM25 score of every passage for `query` (for tests and analysis)."""
    tokens = _tokenize([query], self._stemmer)[0]
    return np.asarray(self._index.get_scores(tokens))


def _cache_folder(spec: str, docs: Sequence[Doc]) -> pathlib.Path:
  name = spec[len("asset:"):] if spec.startswith("asset:") else spec
  digest = corpus_hash(docs)
  path = (assets.local_path(name) if name in assets.ASSETS
          else pathlib.Path(spec))
  beside = path.parent / f".{path.name}.bm25-{digest}"
  # The folder's own write bit, not os.access: root may write anywhere, but a
  # folder shipped read-only (../shared/data) must stay untouched.
  if path.parent.stat().st_mode & stat.S_IWUSR and os.access(path.parent, os.W_OK):
    return beside
  return assets.cache_dir() / "bm25" / f"{path.name}-{digest}"
