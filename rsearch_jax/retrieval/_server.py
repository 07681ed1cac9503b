"""Serve any retriever over HTTP, in both protocols, on loopback by default.

Main entry points:
  serve(retriever, host="127.0.0.1", port=8000, limits=Limits()) -> server
      a started RetrieverServer (a ThreadingHTTPServer in a daemon thread):
      `.server_address`, `.url`, `.shutdown()` (stops and frees the port);
      port 0 picks a free port.
  Limits   max_queries, max_query_chars, max_k, max_body_bytes.

Routes:
  POST /queries   R1-Searcher: {"queries": [...], "k": 3}
                  -> {"queries": [...], "answers": [["<id>\\t<title>   <text>", ...], ...]}
  POST /retrieve  Search-R1: {"queries": [...], "topk": 3, "return_scores": true}
                  -> {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}
                  (without return_scores: the bare documents)
  GET  /health    {"status": "ok"}
A request that is too large or malformed gets a 4xx and {"error": "<what is
wrong>"}; a failure inside the retriever a 500 with its message.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rsearch_jax.retrieval._base import Doc, Retriever


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may ask for; beyond it the request gets a 4xx."""

  max_queries: int = 256
  max_query_chars: int = 2000
  max_k: int = 50
  max_body_bytes: int = 1 << 20

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if getattr(self, field.name) < 1:
        raise ValueError(f"Limits.{field.name}={getattr(self, field.name)} must be >= 1")


class _BadRequest(Exception):

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code


def parse_request(body: bytes, route: str,
                  limits: Limits) -> tuple[list[str], int, bool]:
  """(queries, k, return_scores) of a request body, or _BadRequest."""
  try:
    req = json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _BadRequest(400, f"body is not JSON ({e})") from None
  if not isinstance(req, dict):
    raise _BadRequest(400, "body must be a JSON object")
  if "queries" not in req:
    raise _BadRequest(400, "missing field 'queries'")
  queries = req["queries"]
  if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
    raise _BadRequest(400, "field 'queries' must be a list of strings")
  if len(queries) > limits.max_queries:
    raise _BadRequest(413, f"{len(queries)} queries; at most {limits.max_queries} "
                      "per request")
  for i, q in enumerate(queries):
    if len(q) > limits.max_query_chars:
      raise _BadRequest(413, f"query {i} has {len(q)} characters; at most "
                        f"{limits.max_query_chars}")
  k_field = "k" if route == "/queries" else "topk"
  k = req.get(k_field, 3)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise _BadRequest(400, f"field {k_field!r} must be a positive integer, got {k!r}")
  if k > limits.max_k:
    raise _BadRequest(400, f"{k_field}={k}; at most {limits.max_k}")
  return_scores = req.get("return_scores", False)
  if not isinstance(return_scores, bool):
    raise _BadRequest(400, "field 'return_scores' must be true or false")
  return queries, k, return_scores


def _search(retriever: Retriever, queries: list[str],
            k: int) -> list[list[tuple[Doc, float | None]]]:
  # Real scores when the backend has them (BM25); null otherwise.
  with_scores = getattr(retriever, "search_with_scores", None)
  if with_scores is not None:
    return with_scores(queries, k)
  return [[(d, None) for d in docs] for docs in retriever.search(queries, k)]


def r1_answer_line(doc: Doc) -> str:
  """A passage as a line of R1-Searcher's KILT corpus: `id\\ttitle   text`."""
  return f"{doc.id}\t{doc.title}   {doc.text}" if doc.title else f"{doc.id}\t{doc.text}"


def search_r1_document(doc: Doc) -> dict:
  """A passage as a Search-R1 corpus row: contents `"Title"\\ntext`."""
  return {"id": doc.id, "contents": f'"{doc.title}"\n{doc.text}'}


def _handler(retriever: Retriever, limits: Limits):

  class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: one line per request is noise
      pass

    def _reply(self, code: int, payload: dict):
      data = json.dumps(payload).encode()
      self.send_response(code)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
      if self.path.split("?")[0] == "/health":
        return self._reply(200, {"status": "ok"})
      return self._reply(404, {"error": f"no route GET {self.path}; use POST "
                                        "/queries or /retrieve, or GET /health"})

    def _body(self) -> bytes:
      length = self.headers.get("Content-Length")
      if length is None:
        raise _BadRequest(411, "a Content-Length header is required")
      try:
        length = int(length)
      except ValueError:
        raise _BadRequest(400, f"bad Content-Length {length!r}") from None
      if length > limits.max_body_bytes:
        raise _BadRequest(413, f"body of {length} bytes; at most "
                          f"{limits.max_body_bytes}")
      return self.rfile.read(length)

    def do_POST(self):  # noqa: N802
      route = self.path.split("?")[0]
      try:
        if route not in ("/queries", "/retrieve"):
          raise _BadRequest(404, f"no route POST {route}; use /queries or /retrieve")
        queries, k, return_scores = parse_request(self._body(), route, limits)
      except _BadRequest as e:
        self.close_connection = True  # the body may be unread
        return self._reply(e.code, {"error": str(e)})
      try:
        results = _search(retriever, queries, k)
      except Exception as e:  # noqa: BLE001 (the client gets the reason)
        print(f"retriever failed on {len(queries)} queries: {e!r}", file=sys.stderr)
        return self._reply(500, {"error": f"retriever failed: {e!r}"})
      if route == "/queries":
        answers = [[r1_answer_line(d) for d, _ in row] for row in results]
        return self._reply(200, {"queries": queries, "answers": answers})
      if return_scores:
        result = [[{"document": search_r1_document(d), "score": s} for d, s in row]
                  for row in results]
      else:
        result = [[search_r1_document(d) for d, _ in row] for row in results]
      return self._reply(200, {"result": result})

  return Handler


class RetrieverServer(ThreadingHTTPServer):
  """A ThreadingHTTPServer whose `shutdown()` also closes the listening
  socket, so the port is free again (a restart can bind it at once)."""

  daemon_threads = True
  allow_reuse_address = True

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}"

  def shutdown(self) -> None:
    super().shutdown()
    self.server_close()


def serve(retriever: Retriever, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits()) -> RetrieverServer:
  """Starts serving `retriever` in a daemon thread and returns the server."""
  server = RetrieverServer((host, port), _handler(retriever, limits))
  threading.Thread(target=server.serve_forever, name=f"retriever:{port}",
                   daemon=True).start()
  return server
