"""Serve any retriever over HTTP, in both protocols, on loopback by default.

Main entry points:
  serve(retriever, host="127.0.0.1", port=8000, limits=Limits()) -> server
      a started ThreadingHTTPServer (in a daemon thread); `.server_address`,
      `.shutdown()`; port 0 picks a free port.
  Limits   max_queries, max_query_chars, max_k, max_body_bytes.

Routes: POST /queries (R1-Searcher) and POST /retrieve (Search-R1), see
`_http.py` for the payloads. An oversized or malformed request is answered
with a 4xx and {"error": "<what is wrong>"}.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rsearch_jax.retrieval._base import Retriever


@dataclasses.dataclass(frozen=True)
class Limits:
  max_queries: int = 256
  max_query_chars: int = 2000
  max_k: int = 50
  max_body_bytes: int = 1 << 20


class _BadRequest(Exception):
  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code


def _parse(body: bytes, route: str, limits: Limits) -> tuple[list[str], int]:
  try:
    req = json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _BadRequest(400, f"body is not JSON ({e})") from None
  if not isinstance(req, dict):
    raise _BadRequest(400, "body must be a JSON object")
  queries = req.get("queries")
  if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
    raise _BadRequest(400, "field 'queries' must be a list of strings")
  k_field = "k" if route == "/queries" else "topk"
  k = req.get(k_field, 3)
  if not isinstance(k, int) or k < 1:
    raise _BadRequest(400, f"field {k_field!r} must be a positive integer")
  if len(queries) > limits.max_queries:
    raise _BadRequest(413, f"{len(queries)} queries; at most {limits.max_queries} "
                      "per request")
  for i, q in enumerate(queries):
    if len(q) > limits.max_query_chars:
      raise _BadRequest(413, f"query {i} has {len(q)} characters; at most "
                        f"{limits.max_query_chars}")
  if k > limits.max_k:
    raise _BadRequest(400, f"{k_field}={k}; at most {limits.max_k}")
  return queries, k


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

    def do_POST(self):  # noqa: N802 (http.server's name)
      route = self.path.split("?")[0]
      try:
        if route not in ("/queries", "/retrieve"):
          raise _BadRequest(404, f"no route {route}; use /queries or /retrieve")
        length = int(self.headers.get("Content-Length") or 0)
        if length > limits.max_body_bytes:
          raise _BadRequest(413, f"body of {length} bytes; at most "
                            f"{limits.max_body_bytes}")
        queries, k = _parse(self.rfile.read(length), route, limits)
      except _BadRequest as e:
        self.close_connection = True
        return self._reply(e.code, {"error": str(e)})
      results = retriever.search(queries, k)
      if route == "/queries":
        answers = [[f"{d.id}\t{d.title}   {d.text}" if d.title else f"{d.id}\t{d.text}"
                    for d in docs] for docs in results]
        return self._reply(200, {"queries": queries, "answers": answers})
      result = [[{"document": {"id": d.id,
                               "contents": f'"{d.title}"\n{d.text}'},
                  "score": float(len(docs) - j)}
                 for j, d in enumerate(docs)] for docs in results]
      return self._reply(200, {"result": result})

  return Handler


def serve(retriever: Retriever, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits()) -> ThreadingHTTPServer:
  """Starts serving in a daemon thread and returns the server."""
  server = ThreadingHTTPServer((host, port), _handler(retriever, limits))
  server.daemon_threads = True
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server
