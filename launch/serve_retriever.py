"""Serve a corpus with BM25 over HTTP, in the R1-Searcher and Search-R1 protocols.

    python launch/serve_retriever.py --corpus=asset:wiki-vital-en --port=8000
    python launch/serve_retriever.py --corpus=../shared/data/search_r1/corpus.jsonl

Binds 127.0.0.1 unless --host says otherwise. Routes: POST /queries
({"queries": [...], "k": 3}) and POST /retrieve ({"queries": [...], "topk": 3}).
"""

import pathlib
import sys
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from rsearch_jax import retrieval  # noqa: E402

_CORPUS = flags.DEFINE_string("corpus", "asset:wiki-vital-en",
                              "corpus file or asset:NAME")
_FORMAT = flags.DEFINE_enum("format", None, ["jsonl", "kilt", "tsv", "wiki_vital"],
                            "corpus format (default: from the file)")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to bind")
_PORT = flags.DEFINE_integer("port", 8000, "port (0: any free port)")
_MAX_QUERIES = flags.DEFINE_integer("max_queries", 256, "queries per request")
_MAX_QUERY_CHARS = flags.DEFINE_integer("max_query_chars", 2000, "characters per query")
_MAX_K = flags.DEFINE_integer("max_k", 50, "documents per query")


def main(argv):
  del argv
  start = time.perf_counter()
  bm25 = retrieval.BM25Retriever.from_corpus(_CORPUS.value, format=_FORMAT.value)
  limits = retrieval.Limits(max_queries=_MAX_QUERIES.value,
                            max_query_chars=_MAX_QUERY_CHARS.value,
                            max_k=_MAX_K.value)
  server = retrieval.serve(bm25, _HOST.value, _PORT.value, limits)
  host, port = server.server_address[:2]
  print(f"serving {len(bm25.docs)} passages of {_CORPUS.value} on "
        f"http://{host}:{port} (/queries, /retrieve); ready in "
        f"{time.perf_counter() - start:.1f} s", flush=True)
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    server.shutdown()


if __name__ == "__main__":
  app.run(main)
