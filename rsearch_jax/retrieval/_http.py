"""HTTP client for a remote retriever, in either protocol.

Main entry point:
  HTTPRetriever(url, protocol="r1searcher" | "search_r1", timeout=, retries=,
                backoff=)

Protocols:
  r1searcher  POST {url}/queries  {"queries": [...], "k": 3}
              -> {"answers": [["<id>\\t<title>   <text>", ...], ...]}
              (answers are raw corpus lines, R1-Searcher's server returns
              `corpus[i]`; KILT passages `id\\ttitle   text`, HotpotQA
              abstracts `id\\t"Title: ... Text: ..."`)
  search_r1   POST {url}/retrieve {"queries": [...], "topk": 3, "return_scores": true}
              -> {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}
              (contents: "\\"Title\\"\\ntext")

Connection failures, timeouts and 5xx answers are retried with exponential
backoff (backoff, 2 backoff, 4 backoff ... seconds), up to `retries` more
attempts; then a ConnectionError names the URL and the attempts. A 4xx is the
request's fault: raised at once (RetrieverRequestError, a ValueError) with
the server's message, never retried. A reply that is not the protocol's
shape is a ValueError naming the URL.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request

from rsearch_jax.retrieval._base import Doc, Retriever
from rsearch_jax.retrieval._corpus import split_r1_passage

PROTOCOLS = ("r1searcher", "search_r1")


class RetrieverRequestError(ValueError):
  """The server rejected the request (HTTP 4xx); `code` is the status."""

  def __init__(self, message: str, code: int):
    super().__init__(message)
    self.code = code


_LEADING_ID = re.compile(r"^(\d+)\s+")


def parse_r1_line(line: str, index: int = 0) -> Doc:
  """One R1-Searcher answer (a raw corpus line, `id\\ttitle   text`) -> Doc.

  The id is the field before the tab, or the leading number R1-Searcher's
  rollout strips (`^\\d+\\s+`); `index` stands in when there is neither.
  """
  doc_id, sep, body = line.partition("\t")
  if not sep or not doc_id or any(c.isspace() for c in doc_id):
    m = _LEADING_ID.match(line)
    doc_id, body = (m.group(1), line[m.end():]) if m else (str(index), line)
  title, text = split_r1_passage(body)
  return Doc(id=doc_id, title=title, text=text)


def parse_search_r1_doc(entry: dict) -> Doc:
  """One Search-R1 result ({"document": {...}, "score"} or the bare document
  when return_scores is false) -> Doc."""
  doc = entry.get("document", entry)
  contents = doc["contents"]
  first, sep, rest = contents.partition("\n")
  title, text = (first.strip().strip('"'), rest) if sep else ("", contents)
  return Doc(id=str(doc.get("id", "")), title=title, text=text.strip())


class HTTPRetriever(Retriever):
  """A retriever behind an HTTP server (R1-Searcher's or Search-R1's API)."""

  def __init__(self, url: str, protocol: str = "r1searcher", *,
               timeout: float = 30.0, retries: int = 3, backoff: float = 0.5):
    if retries < 0 or timeout <= 0 or backoff < 0:
      raise ValueError(f"retriever: retries={retries} >= 0, timeout={timeout} > 0 "
                       f"and backoff={backoff} >= 0 expected")
    if protocol not in PROTOCOLS:
      raise ValueError(f"retriever.protocol={protocol!r}: expected one of {PROTOCOLS}")
    if not url.startswith(("http://", "https://")):
      raise ValueError(f"retriever.url={url!r}: expected http://host:port")
    self.url = url.rstrip("/")
    self.protocol = protocol
    self.timeout, self.retries, self.backoff = timeout, retries, backoff

  def search(self, queries: list[str], k: int) -> list[list[Doc]]:
    out: list[list[Doc]] = [[] for _ in queries]
    live = [i for i, q in enumerate(queries) if q.strip()]
    if not live or k <= 0:
      return out
    sent = [queries[i] for i in live]
    if self.protocol == "r1searcher":
      reply = self._post("/queries", {"queries": sent, "k": k})
      rows = reply.get("answers")
      parse = lambda rows: [[parse_r1_line(l, j) for j, l in enumerate(r)] for r in rows]
    else:
      reply = self._post("/retrieve", {"queries": sent, "topk": k,
                                       "return_scores": True})
      rows = reply.get("result")
      parse = lambda rows: [[parse_search_r1_doc(e) for e in r] for r in rows]
    if not isinstance(rows, list) or len(rows) != len(sent):
      raise ValueError(f"{self.url}: malformed reply for {len(sent)} queries: "
                       f"{str(reply)[:200]}")
    try:
      parsed = parse(rows)
    except (TypeError, KeyError, AttributeError) as e:
      raise ValueError(f"{self.url}: malformed {self.protocol} reply ({e!r}): "
                       f"{str(reply)[:200]}") from None
    for i, docs in zip(live, parsed):
      out[i] = docs[:k]
    return out

  def _post(self, path: str, body: dict) -> dict:
    url = self.url + path
    data = json.dumps(body).encode()
    last = None
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.backoff * 2 ** (attempt - 1))
      request = urllib.request.Request(
          url, data=data, headers={"Content-Type": "application/json"})
      try:
        with urllib.request.urlopen(request, timeout=self.timeout) as r:
          raw = r.read()
      except urllib.error.HTTPError as e:
        detail = _error_detail(e)
        if 400 <= e.code < 500:
          raise RetrieverRequestError(f"{url}: HTTP {e.code}: {detail}",
                                      e.code) from None
        last = f"HTTP {e.code}: {detail}"
        continue
      # OSError covers refused / reset connections and socket timeouts;
      # HTTPException a server that died mid-reply.
      except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        last = repr(getattr(e, "reason", e))
        continue
      try:
        reply = json.loads(raw)
      except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{url}: reply is not JSON: {raw[:200]!r}") from None
      if not isinstance(reply, dict):
        raise ValueError(f"{url}: reply is not a JSON object: {raw[:200]!r}")
      return reply
    raise ConnectionError(f"retriever at {url} is unreachable after "
                          f"{self.retries + 1} attempts (last error: {last})")


def _error_detail(e: urllib.error.HTTPError) -> str:
  """The server's message: the "error" field of a JSON body, else the body."""
  body = e.read().decode(errors="replace")
  try:
    return str(json.loads(body)["error"])
  except (ValueError, KeyError, TypeError):
    return body[:500] or e.reason
