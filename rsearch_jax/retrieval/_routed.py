"""One retriever per corpus, chosen per query.

A rollout batch may mix questions about different corpora: the synthetic
world's RL questions from its renamed copies, where the same name has other
facts in each copy, so one index over all of them would mix answers. Each
question names its corpus (a key); the sampler hands the keys of its rows
to the hand-off, which calls `search(queries, k, corpora=keys)`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from rsearch_jax.retrieval._base import Doc, Retriever


class RoutedRetriever(Retriever):
  """`search(queries, k, corpora=None)`: query i searches `corpora[i]`'s
  retriever; the key "" (and `corpora=None`) is the default corpus."""

  def __init__(self, default: Retriever, others: Mapping[str, Retriever]):
    if "" in others:
      raise ValueError("RoutedRetriever: the key '' names the default corpus")
    self.retrievers = {"": default, **others}

  def search(self, queries: list[str], k: int,
             corpora: Sequence[str] | None = None) -> list[list[Doc]]:
    if corpora is None:
      corpora = [""] * len(queries)
    if len(corpora) != len(queries):
      raise ValueError(f"{len(queries)} queries but {len(corpora)} corpus keys")
    unknown = sorted(set(corpora) - set(self.retrievers))
    if unknown:
      raise KeyError(f"no retriever for corpus {unknown[0]!r}; known: "
                     f"{sorted(self.retrievers)[:5]}...")
    out: list[list[Doc]] = [[] for _ in queries]
    for key in dict.fromkeys(corpora):  # one batched call per corpus
      rows = [i for i, c in enumerate(corpora) if c == key]
      for i, docs in zip(rows, self.retrievers[key].search(
          [queries[i] for i in rows], k)):
        out[i] = docs
    return out

  def close(self) -> None:
    for r in self.retrievers.values():
      r.close()
