"""In-process BM25 over a list of passages: the embedded default retriever.

Main entry points:
  BM25Retriever(docs, k1=1.5, b=0.75)      index built in memory
  BM25Retriever.from_corpus(spec)          read a corpus (load_corpus), and
                                           reuse / write its index cached on
                                           disk next to it

Built on `bm25s` (sparse scores precomputed at index time: under a
millisecond a query over ~20k passages) with English stopwords and the
Snowball stemmer of PyStemmer. Scoring is Lucene's BM25:
  idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)),
  idf(t) = log(1 + (N - df + 0.5) / (df + 0.5)).

The cache folder is named after the corpus file and a hash of its passages
and the BM25 parameters, so a changed corpus never reuses a stale index (the
older folder is removed when the new one is written). When the corpus folder
is read-only (../shared/data) the cache goes to `$RSEARCH_CACHE/bm25/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import stat
import threading
from typing import Sequence

import numpy as np

from rsearch_jax import assets
from rsearch_jax.retrieval._base import Doc, Retriever
from rsearch_jax.retrieval._corpus import asset_name, load_corpus

# Bumped when the tokenization or the on-disk layout changes: old caches then
# hash to another folder and are never read.
_FORMAT_VERSION = 2
_META = "rsearch_meta.json"


def tokenize(texts: Sequence[str], stemmer) -> list[list[str]]:
  """Lowercased words of 2+ characters, English stopwords dropped, stemmed."""
  import bm25s
  return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer,
                        return_ids=False, show_progress=False)


def corpus_hash(docs: Sequence[Doc], k1: float, b: float) -> str:
  """16 hex digits over every passage (id, title, text) and the parameters."""
  h = hashlib.sha256(f"v{_FORMAT_VERSION} k1={k1!r} b={b!r}".encode())
  for d in docs:
    for field in (d.id, d.title, d.text):
      h.update(field.encode())
      h.update(b"\0")
    h.update(b"\1")
  return h.hexdigest()[:16]


class BM25Retriever(Retriever):
  """BM25 over `docs`; `search` is thread-safe (one lock: PyStemmer objects
  must not be shared between threads, and a batch is a single call anyway)."""

  def __init__(self, docs: Sequence[Doc], *, k1: float = 1.5, b: float = 0.75,
               _index=None):
    import bm25s
    import Stemmer
    if not docs:
      raise ValueError("BM25Retriever: the corpus is empty")
    if k1 < 0 or not 0 <= b <= 1:
      raise ValueError(f"BM25Retriever: k1={k1} must be >= 0 and b={b} in [0, 1]")
    self.docs = list(docs)
    self.k1, self.b = k1, b
    self._stemmer = Stemmer.Stemmer("english")
    self._lock = threading.Lock()
    if _index is None:
      _index = bm25s.BM25(k1=k1, b=b, method="lucene")
      _index.index(tokenize([d.contents() for d in self.docs], self._stemmer),
                   show_progress=False)
    self._index = _index

  @classmethod
  def from_corpus(cls, spec: str | os.PathLike, *, format: str | None = None,
                  k1: float = 1.5, b: float = 0.75,
                  cache: bool = True) -> "BM25Retriever":
    """Reads `spec` (a corpus file or an asset name, see `load_corpus`) and
    loads its cached index, or builds the index and caches it."""
    docs = load_corpus(spec, format)
    if not cache:
      return cls(docs, k1=k1, b=b)
    digest = corpus_hash(docs, k1, b)
    for folder in _cache_candidates(str(spec), digest):
      index = _load_index(folder, digest, len(docs))
      if index is not None:
        return cls(docs, k1=k1, b=b, _index=index)
    retriever = cls(docs, k1=k1, b=b)
    for folder in _cache_candidates(str(spec), digest):
      try:
        retriever._save_index(folder, digest)
        break
      except OSError:  # read-only or full: try the next place, else no cache
        continue
    return retriever

  def _save_index(self, folder: pathlib.Path, digest: str) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.partial{os.getpid()}-{threading.get_ident()}")
    try:
      self._index.save(str(tmp))
      (tmp / _META).write_text(json.dumps(
          {"hash": digest, "num_docs": len(self.docs), "k1": self.k1, "b": self.b}))
      if folder.exists():
        shutil.rmtree(folder)
      try:
        tmp.rename(folder)  # a half-written index is never picked up
      except OSError:
        if not (folder / _META).is_file():
          raise
        # Another process saved the same index (same hash) first: keep theirs.
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    # Indexes of earlier versions of this corpus are stale forever: drop them.
    prefix = folder.name[:-len(digest)]
    for old in folder.parent.glob(f"{prefix}*"):
      if old.name != folder.name and old.is_dir() and ".partial" not in old.name:
        shutil.rmtree(old, ignore_errors=True)

  def search(self, queries: list[str], k: int) -> list[list[Doc]]:
    return [[d for d, _ in row] for row in self.search_with_scores(queries, k)]

  def search_with_scores(self, queries: list[str],
                         k: int) -> list[list[tuple[Doc, float]]]:
    """Like `search`, with each passage's BM25 score (highest first);
    passages sharing no term with the query are not returned."""
    out: list[list[tuple[Doc, float]]] = [[] for _ in queries]
    k = min(int(k), len(self.docs))
    if not queries or k <= 0:
      return out
    with self._lock:
      tokens = tokenize(queries, self._stemmer)
      live = [i for i, t in enumerate(tokens) if t]
      if not live:
        return out
      # n_threads=0 scores in this thread; any other value starts a thread
      # pool per call (~1 ms, more than a query costs).
      ids, scores = self._index.retrieve([tokens[i] for i in live], k=k,
                                         show_progress=False, n_threads=0)
    for row, i in enumerate(live):
      out[i] = [(self.docs[j], float(s)) for j, s in zip(ids[row], scores[row])
                if s > 0]
    return out

  def scores(self, query: str) -> np.ndarray:
    """[N] float: the BM25 score of every passage for `query`."""
    with self._lock:
      tokens = tokenize([query], self._stemmer)[0]
      return np.asarray(self._index.get_scores(tokens))


def _load_index(folder: pathlib.Path, digest: str, num_docs: int):
  """The cached bm25s index in `folder` if it is complete and for this exact
  corpus (hash and size recorded at save time), else None."""
  import bm25s
  try:
    meta = json.loads((folder / _META).read_text())
    if meta.get("hash") != digest or meta.get("num_docs") != num_docs:
      return None
    index = bm25s.BM25.load(str(folder), show_progress=False)
  except (OSError, ValueError, KeyError):  # missing or damaged: rebuild
    return None
  return index if index.scores["num_docs"] == num_docs else None


def _cache_candidates(spec: str, digest: str) -> list[pathlib.Path]:
  """Where the index of `spec` may live: beside the corpus file (when its
  folder is writable), then under `$RSEARCH_CACHE/bm25/`."""
  name = asset_name(spec)
  path = assets.local_path(name) if name else pathlib.Path(spec)
  beside = path.parent / f".{path.name}.bm25-{digest}"
  shared = assets.cache_dir() / "bm25" / f"{path.name}.bm25-{digest}"
  # The folder's own write bit, not only os.access: root may write anywhere,
  # but a folder shipped read-only (../shared/data) must stay untouched.
  parent = path.parent
  writable = (parent.is_dir() and parent.stat().st_mode & stat.S_IWUSR
              and os.access(parent, os.W_OK))
  return [beside, shared] if writable else [shared]
