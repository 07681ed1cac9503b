"""HTTP client for a remote retriever, in either protocol.

Main entry point:
  HTTPRetriever(url, protocol="r1searcher" | "search_r1", timeout=, retries=,
                backoff=)

Protocols:
  r1searcher  POST {url}/queries  {"queries": [...], "k": 3}
              -> {"answers": [["<id>\\t<title>   <text>", ...], ...]}
              (answer lines are corpus lines; the leading id is dropped, as
              R1-Searcher's rollout code does)
  search_r1   POST {url}/retrieve {"queries": [...], "topk": 3, "return_scores": true}
              -> {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}
              (contents: "\\"Title\\"\\ntext")

Connection failures and 5xx answers are retried with exponential backoff, up
to `retries` more attempts; then a ConnectionError names the URL and the
attempts. A 4xx is the request's fault: raised at once with the server's
message.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

from rsearch_jax.retrieval._base import Doc, Retriever

PROTOCOLS = ("r1searcher", "search_r1")
_LEADING_ID = re.compile(r"^\d+\s+")


def parse_r1_line(line: str, index: int = 0) -> Doc:
  """One R1-Searcher answer line -> Doc (id, then "title   text" when the
  title is separated by three spaces, as in its KILT corpus)."""
  doc_id, sep, body = line.partition("\t")
  if not sep:
    m = _LEADING_ID.match(line)
    doc_id, body = (m.group(0).strip(), line[m.end():]) if m else (str(index), line)
  title, sep, text = body.partition("   ")
  if not sep:
    title, text = "", body
  return Doc(id=doc_id.strip(), title=title.strip(), text=text.strip())


def parse_search_r1_doc(entry: dict) -> Doc:
  doc = entry.get("document", entry)
  contents = str(doc.get("contents", ""))
  first, sep, rest = contents.partition("\n")
  title, text = (first.strip().strip('"'), rest) if sep else ("", contents)
  return Doc(id=str(doc.get("id", "")), title=title, text=text.strip())


class HTTPRetriever(Retriever):
  """A retriever behind an HTTP server (R1-Searcher's or Search-R1's API)."""

  def __init__(self, url: str, protocol: str = "r1searcher", *,
               timeout: float = 30.0, retries: int = 3, backoff: float = 0.5):
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
    if not live:
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
    for i, docs in zip(live, parse(rows)):
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
          return json.loads(r.read())
      except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        if 400 <= e.code < 500:
          raise ValueError(f"{url}: HTTP {e.code}: {detail}") from None
        last = f"HTTP {e.code}: {detail}"
      except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        last = str(getattr(e, "reason", e))
    raise ConnectionError(f"retriever at {url} is unreachable after "
                          f"{self.retries + 1} attempts (last error: {last})")
