"""Serve a corpus with BM25 over HTTP, in the R1-Searcher and Search-R1 protocols.

    python launch/serve_retriever.py --corpus=wiki-vital-en --port=8000
    python launch/serve_retriever.py --corpus=../shared/data/search_r1/corpus.jsonl

Binds 127.0.0.1 unless --host says otherwise. Routes: POST /queries
({"queries": [...], "k": 3}), POST /retrieve ({"queries": [...], "topk": 3,
"return_scores": true}), GET /health. Requests beyond the --max_* limits get
a 4xx with a JSON message. The BM25 index is cached next to the corpus (or
under $RSEARCH_CACHE/bm25/), so a restart is quick.
"""

import pathlib
import sys
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from rsearch_jax import retrieval  # noqa: E402
from rsearch_jax.retrieval import _corpus  # noqa: E402

_CORPUS = flags.DEFINE_string("corpus", "wiki-vital-en",
                              "corpus file, or a corpus asset name")
_FORMAT = flags.DEFINE_enum("format", None, sorted(_corpus.READERS),
                            "corpus format (default: from the file)")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to bind")
_PORT = flags.DEFINE_integer("port", 8000, "port (0: any free port)")
_MAX_QUERIES = flags.DEFINE_integer("max_queries", 256, "queries per request")
_MAX_QUERY_CHARS = flags.DEFINE_integer("max_query_chars", 2000,
                                        "characters per query")
_MAX_K = flags.DEFINE_integer("max_k", 50, "documents per query")
_MAX_BODY_BYTES = flags.DEFINE_integer("max_body_bytes", 1 << 20,
                                       "bytes per request body")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  start = time.perf_counter()
  limits = retrieval.Limits(max_queries=_MAX_QUERIES.value,
                            max_query_chars=_MAX_QUERY_CHARS.value,
                            max_k=_MAX_K.value, max_body_bytes=_MAX_BODY_BYTES.value)
  try:
    bm25 = retrieval.BM25Retriever.from_corpus(_CORPUS.value, format=_FORMAT.value)
    server = retrieval.serve(bm25, _HOST.value, _PORT.value, limits)
  except (OSError, ValueError) as e:  # bad corpus, port taken: no traceback
    sys.exit(f"serve_retriever: {e}")
  print(f"serving {len(bm25.docs)} passages of {_CORPUS.value} on {server.url} "
        f"(POST /queries, POST /retrieve); ready in "
        f"{time.perf_counter() - start:.1f} s", flush=True)
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    server.shutdown()


if __name__ == "__main__":
  app.run(main)
