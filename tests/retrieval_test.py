"""Retrieval: corpus readers, BM25 (against a from-the-formula reference),
its on-disk cache, and the HTTP client and server on loopback in both
protocols, including a server that goes down mid-run."""

import collections
import json
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from rsearch_jax import retrieval
from rsearch_jax.retrieval import (BM25Retriever, Doc, HTTPRetriever,
                                   RoutedRetriever)


@pytest.fixture(scope="module")
def search_r1_bm25(shared_data):
  return BM25Retriever.from_corpus(shared_data / "search_r1" / "corpus.jsonl")


@pytest.fixture(scope="module")
def kilt_path(shared_data):
  return shared_data / "r1_searcher" / "corpus_samples" / "filtered_kilt_sample_100.jsonl"


@pytest.fixture(scope="module")
def kilt_bm25(kilt_path):
  return BM25Retriever.from_corpus(kilt_path)


# Each answer was checked by hand to be in the passage named (corpus id).
@pytest.mark.parametrize("question,doc_id,answer", [
    ("What was Evan Morris's occupation at Genentech?", "0", "lobbyist"),
    ("Who gathered an Algonkin vocabulary from Indians camped on the college "
     "grounds?", "1", "Algonkin vocabulary"),
    ("Where did the Portuguese build a fort and a wall during the Habsburg "
     "Dynasty?", "2", "Dibba"),
    ("Who killed Shun at the riverbank in Ao Oni?", "8", "Takuro hit Shun"),
    ("When was the cathedral begun under architect Cristoforo Rocchi?", "4", "1488"),
    ("Who designed the dome of Pavia Cathedral, completed in 1885?", "5",
     "Carlo Maciachini"),
    ("Since when has Iowa 17 been designated as a highway?", "6", "1969"),
    ("Was the E.T. video game a financial failure for Atari?", "7",
     "financial failure"),
    ("Which Red Army corps fought in the Vyazma airborne operation?", "9",
     "4th Airborne Corps"),
])
def test_bm25_ranks_the_right_passage_first(search_r1_bm25, question, doc_id, answer):
  top = search_r1_bm25.search([question], 3)[0][0]
  assert top.id == doc_id and answer in top.contents()


@pytest.mark.parametrize("question,title,answer", [
    ("Who wrote the illustrated children's book Animalia?", "Animalia (book)",
     "Graeme Base"),
    ("Who led the French army at the Battle of Tudela in 1808?", "Battle of Tudela",
     "Marshal Jean Lannes"),
    ("Which band released the album Subhuman Race in 1995?", "Subhuman Race",
     "Skid Row"),
    ("Who was the bass guitar player of Skid Row?", "Rachel Bolan", "bass guitar"),
    ("Which Gang of Four member was a labour activist in Shanghai?", "Wang Hongwen",
     "labour activist"),
    ("In which county is Stokesay Castle situated?", "Stokesay Castle", "Shropshire"),
])
def test_bm25_on_the_kilt_sample(kilt_bm25, question, title, answer):
  top = kilt_bm25.search([question], 3)[0][0]
  assert top.title == title and answer in top.text


def _tokens(text):
  """The retriever's tokenization, written out: lowercased words of 2+
  characters, bm25s' English stopwords dropped, Snowball-stemmed."""
  import Stemmer
  from bm25s.stopwords import STOPWORDS_EN
  stem = Stemmer.Stemmer("english").stemWord
  return [stem(w) for w in re.findall(r"\b\w\w+\b", text.lower())
          if w not in STOPWORDS_EN]


def _reference_bm25(docs_tokens, query_tokens, k1=1.5, b=0.75):
  """[N] BM25 scores from the formula as Lucene computes it (idf
  log(1 + (N - df + .5) / (df + .5)), no (k1 + 1) factor), in numpy."""
  counts = [collections.Counter(d) for d in docs_tokens]
  lengths = np.array([len(d) for d in docs_tokens], np.float64)
  norm = k1 * (1 - b + b * lengths / lengths.mean())
  scores = np.zeros(len(docs_tokens))
  for t in set(query_tokens):
    tf = np.array([c[t] for c in counts], np.float64)
    df = np.count_nonzero(tf)
    if df:
      idf = math.log(1 + (len(docs_tokens) - df + 0.5) / (df + 0.5))
      scores += idf * tf / (tf + norm)
  return scores


def test_bm25_scores_match_the_formula_on_a_small_corpus():
  texts = ["red apples grow on apple trees in the orchard",
           "the orchard sells pears and apples",
           "trains run on rails between cities",
           "apple apple apple pie recipe",
           "a city with many trains and a big station"]
  docs = [Doc(str(i), "", t) for i, t in enumerate(texts)]
  bm25 = BM25Retriever(docs)
  for query in ("apple orchard", "trains cities", "pie", "apples and rails"):
    want = _reference_bm25([_tokens(t) for t in texts], _tokens(query))
    np.testing.assert_allclose(bm25.scores(query), want, rtol=1e-5, atol=1e-6)
    got = bm25.search_with_scores([query], 5)[0]
    order = [str(i) for i in np.argsort(-want, kind="stable") if want[i] > 0]
    assert [d.id for d, _ in got] == order
    np.testing.assert_allclose([s for _, s in got], np.sort(want[want > 0])[::-1],
                               rtol=1e-5)


def test_bm25_scores_match_the_formula_on_kilt_with_other_parameters(kilt_path):
  docs = retrieval.read_kilt_pages(kilt_path)
  bm25 = BM25Retriever(docs, k1=0.9, b=0.4)
  docs_tokens = [_tokens(d.contents()) for d in docs]
  for query in ("Napoleon French army Austrian battle", "Skid Row album",
                "Prince of Antioch crusade"):
    want = _reference_bm25(docs_tokens, _tokens(query), k1=0.9, b=0.4)
    np.testing.assert_allclose(bm25.scores(query), want, rtol=1e-4, atol=1e-5)
    top = [d.id for d in bm25.search([query], 10)[0]]
    assert top[:3] == [docs[i].id for i in np.argsort(-want, kind="stable")[:3]]


def test_empty_unknown_queries_and_k(search_r1_bm25):
  out = search_r1_bm25.search(["", "   ", "the of and", "xyzzy qwertyuiop",
                               "Pavia cathedral"], 50)
  assert out[:4] == [[], [], [], []]
  # k is clipped to the corpus (10 passages), and only matching ones return.
  assert {d.id for d in out[4]} == {"4", "5"}
  assert search_r1_bm25.search([], 3) == []
  assert search_r1_bm25.search(["Pavia"], 0) == [[]]


def test_search_is_thread_safe(kilt_bm25):
  queries = [d.title + " " + d.text.split()[-1] for d in kilt_bm25.docs[::40]]
  want = kilt_bm25.search(queries, 3)
  got = [None] * 8
  errors = []

  def worker(t):
    try:
      got[t] = [kilt_bm25.search([q], 3)[0] for q in queries]
    except Exception as e:  # noqa: BLE001
      errors.append(e)

  threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
  [t.start() for t in threads]
  [t.join() for t in threads]
  assert not errors and all(g == want for g in got)


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_index_cache_reused_and_invalidated(tmp_path):
  corpus = tmp_path / "c.jsonl"
  rows = [{"id": str(i), "contents": f'"T{i}"\nword{i} common text'} for i in range(20)]
  _write_jsonl(corpus, rows)
  BM25Retriever.from_corpus(corpus)
  caches = list(tmp_path.glob(".c.jsonl.bm25-*"))
  assert len(caches) == 1
  stamp = {p.name: p.stat().st_mtime_ns for p in caches[0].iterdir()}
  again = BM25Retriever.from_corpus(corpus)
  assert {p.name: p.stat().st_mtime_ns for p in caches[0].iterdir()} == stamp  # reused
  assert again.search(["word7"], 1)[0][0].id == "7"

  rows[7]["contents"] = '"T7"\nchanged common text'
  _write_jsonl(corpus, rows)
  fresh = BM25Retriever.from_corpus(corpus)
  now = list(tmp_path.glob(".c.jsonl.bm25-*"))
  assert len(now) == 1 and now != caches  # a new index; the stale one is gone
  assert fresh.search(["word7"], 1)[0] == []
  assert fresh.search(["changed"], 1)[0][0].id == "7"

  # Other BM25 parameters: another index. A damaged index: rebuilt.
  BM25Retriever.from_corpus(corpus, k1=1.2)
  assert len(list(tmp_path.glob(".c.jsonl.bm25-*"))) == 1
  (list(tmp_path.glob(".c.jsonl.bm25-*"))[0] / "vocab.index.json").write_text("{")
  assert BM25Retriever.from_corpus(corpus, k1=1.2).search(
      ["changed"], 1)[0][0].id == "7"


def test_read_only_corpus_caches_under_rsearch_cache(shared_data, tmp_path, monkeypatch):
  monkeypatch.setenv("RSEARCH_CACHE", str(tmp_path))
  corpus = shared_data / "search_r1" / "corpus.jsonl"
  before = sorted(p.name for p in corpus.parent.iterdir())
  BM25Retriever.from_corpus(corpus)
  assert len(list((tmp_path / "bm25").glob("corpus.jsonl.bm25-*"))) == 1
  assert sorted(p.name for p in corpus.parent.iterdir()) == before


def test_corpus_readers_on_shipped_files(shared_data, kilt_path):
  cs = shared_data / "r1_searcher" / "corpus_samples"
  kilt = retrieval.load_corpus(kilt_path)
  pages = [json.loads(line) for line in kilt_path.open()]
  words = ["".join(p["text"]).replace("BULLET::::", "").replace(
      "Section::::", "").split() for p in pages]
  assert len(kilt) == sum(math.ceil(len(w) / 100) for w in words)
  assert all(1 <= len(d.text.split()) <= 100 for d in kilt)
  assert kilt[0].title == pages[0]["wikipedia_title"]
  assert kilt[0].text == " ".join(words[0][:100])
  assert kilt[1].text == " ".join(words[0][100:200])
  assert not any("::::" in d.text for d in kilt[:50])

  tsv = retrieval.load_corpus(cs / "train_kilt_full_page_sample_100.tsv")
  lines = [l for l in (cs / "train_kilt_full_page_sample_100.tsv").read_text(
      encoding="utf-8-sig").splitlines() if l.strip()]
  assert len(tsv) == len(lines)
  assert tsv[0].id == "0" and tsv[0].title == "A" and tsv[0].text.startswith("A A (named")

  abstracts = retrieval.load_corpus(cs / "train_np_title_abs_sample_100.tsv")
  assert len(abstracts) == 100
  assert abstracts[0].title == "Professional Football League of Ukraine"
  # CSV quoting undone: "" -> ".
  assert abstracts[0].text.startswith('Professional Football League of Ukraine '
                                      '(Ukrainian: "Професіональна')
  assert abstracts[1].title == "Lucy Mair"

  sr1 = retrieval.load_corpus(shared_data / "search_r1" / "corpus.jsonl")
  assert [d.title for d in sr1][:2] == ["Evan Morris", "Horatio Hale"]
  assert sr1[1].text.startswith("consisted of an Algonkin vocabulary")


def test_wiki_vital_reader(tmp_path):
  path = tmp_path / "summaries.json"
  long_text = " ".join(f"w{i}" for i in range(230))
  path.write_text(json.dumps({
      "Alpha": {"title": "Alpha", "extract": long_text},
      "Beta": {"title": "Beta", "extract": "Short lead."},
      "Empty": {"title": "Empty", "extract": ""}}))
  docs = retrieval.load_corpus(path)
  assert [d.title for d in docs] == ["Alpha"] * 3 + ["Beta"]
  assert [len(d.text.split()) for d in docs] == [100, 100, 30, 2]
  assert docs[2].text.split()[-1] == "w229"
  path.write_text(json.dumps({"Alpha": {"title": "Alpha"}}))
  with pytest.raises(ValueError, match=r"summaries.json: entry 'Alpha' has no text"):
    retrieval.load_corpus(path)


def test_wiki_vital_asset_if_fetched():
  from rsearch_jax import assets
  if not assets.local_path("wiki-vital-en").exists():
    pytest.skip("wiki-vital-en not fetched (python -m rsearch_jax.assets fetch wiki-vital-en)")
  docs = retrieval.load_corpus("wiki-vital-en")
  raw = json.loads(assets.local_path("wiki-vital-en").read_text())
  assert len({d.title for d in docs}) > 9000
  assert all(len(d.text.split()) <= 100 for d in docs)
  first = next(iter(raw.values()))
  assert docs[0].title == first["title"]
  assert docs[0].text == " ".join(first["extract"].split()[:100])


def test_malformed_lines_name_file_and_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "0", "contents": "\\"A\\"\\ntext"}\n\n{"id": 1, "contents": \n')
  with pytest.raises(ValueError, match=r"bad.jsonl:3: not valid JSON"):
    retrieval.load_corpus(bad)
  bad.write_text('{"id": "0", "text": "no contents"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field 'contents'"):
    retrieval.load_corpus(bad, format="jsonl")
  bad.write_text('{"id": "0", "contents": "\\"A\\"\\nfine"}\n[1, 2]\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a JSON object"):
    retrieval.load_corpus(bad)
  kilt = tmp_path / "k.jsonl"
  kilt.write_text('{"wikipedia_title": "X", "text": "not a list"}\n')
  with pytest.raises(ValueError, match=r"k.jsonl:1: field 'text' should be list"):
    retrieval.load_corpus(kilt)
  kilt.write_text('{"wikipedia_title": "X", "text": ["a\\n"]}\n'
                  '{"wikipedia_title": "Y", "text": ["a", 3]}\n')
  with pytest.raises(ValueError, match=r"k.jsonl:2: field 'text' should be a list of str"):
    retrieval.load_corpus(kilt)
  tsv = tmp_path / "t.tsv"
  tsv.write_text("0\tfine   text\nno tab here\n")
  with pytest.raises(ValueError, match=r"t.tsv:2: expected 'id<TAB>text'"):
    retrieval.load_corpus(tsv)
  tsv.write_text("0\tfine   text\n1\t   \n")
  with pytest.raises(ValueError, match=r"t.tsv:2: empty passage text"):
    retrieval.load_corpus(tsv)
  js = tmp_path / "w.json"
  js.write_text('{\n "A": {"title": "A", "extract": "x"},\n "B": oops\n}')
  with pytest.raises(ValueError, match=r"w.json:3: not valid JSON"):
    retrieval.load_corpus(js)
  with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
    retrieval.load_corpus(tmp_path / "nowhere.jsonl")
  (tmp_path / "c.csv").write_text("a,b\n")
  with pytest.raises(ValueError, match=r"c.csv: cannot tell the corpus format"):
    retrieval.load_corpus(tmp_path / "c.csv")
  with pytest.raises(ValueError, match=r"format 'xml' is not one of"):
    retrieval.load_corpus(tsv, format="xml")
  with pytest.raises(ValueError, match=r"'asset:smollm2-135m-instruct': not a corpus"):
    retrieval.load_corpus("asset:smollm2-135m-instruct")


def test_make_retriever(shared_data):
  bm25 = retrieval.make_retriever(
      "bm25", corpus=str(shared_data / "search_r1" / "corpus.jsonl"), k1=1.2)
  assert isinstance(bm25, BM25Retriever) and bm25.k1 == 1.2
  http = retrieval.make_retriever("http", url="http://127.0.0.1:9", protocol="search_r1")
  assert isinstance(http, HTTPRetriever) and http.protocol == "search_r1"
  with pytest.raises(ValueError, match=r"retriever.kind='faiss'"):
    retrieval.make_retriever("faiss")
  with pytest.raises(ValueError, match=r"retriever.url must be set"):
    retrieval.make_retriever("http")
  with pytest.raises(ValueError, match=r"unknown fields \['topk'\]"):
    retrieval.make_retriever("http", url="http://127.0.0.1:9", topk=3)


# --- HTTP --------------------------------------------------------------------


def test_parse_r1_searcher_answer_lines(shared_data):
  """Answer lines are raw lines of R1-Searcher's corpora (its server returns
  `corpus[i]`); the client reads them like the TSV reader does."""
  from rsearch_jax.retrieval._http import parse_r1_line
  cs = shared_data / "r1_searcher" / "corpus_samples"
  for name in ("train_kilt_full_page_sample_100.tsv", "train_np_title_abs_sample_100.tsv"):
    lines = (cs / name).read_text(encoding="utf-8-sig").splitlines()
    want = retrieval.read_r1_tsv(cs / name)
    assert [parse_r1_line(l) for l in lines if l.strip()] == want
  # Without a tab, the leading number is the id (R1-Searcher strips ^\d+\s+).
  assert parse_r1_line("12 Title   text here") == Doc("12", "Title", "text here")
  assert parse_r1_line("no id at all", 4) == Doc("4", "", "no id at all")


@pytest.fixture()
def server(search_r1_bm25):
  s = retrieval.serve(search_r1_bm25, "127.0.0.1", 0,
                      retrieval.Limits(max_queries=4, max_query_chars=100, max_k=5,
                                       max_body_bytes=2000))
  yield s
  s.shutdown()


def _as_tuples(results):
  return [[(d.id, d.title, d.text) for d in row] for row in results]


@pytest.mark.parametrize("protocol", ["r1searcher", "search_r1"])
def test_http_round_trip_equals_in_process(server, search_r1_bm25, protocol):
  assert server.server_address[0] == "127.0.0.1"
  client = HTTPRetriever(server.url, protocol=protocol, retries=0)
  queries = ["Pavia cathedral architect", "", "Genentech lobbyist", "Ao Oni Takeshi"]
  got = client.search(queries, 3)
  assert got[1] == [] and {d.id for d in got[3]} == {"3", "8"}
  assert _as_tuples(got) == _as_tuples(search_r1_bm25.search(queries, 3))


def test_http_round_trip_with_kilt_ids(kilt_bm25):
  queries = ["Battle of Tudela Lannes", "Skid Row bass"]
  s = retrieval.serve(kilt_bm25, "127.0.0.1", 0)
  try:
    for protocol in ("r1searcher", "search_r1"):
      got = HTTPRetriever(s.url, protocol=protocol, retries=0).search(queries, 4)
      assert _as_tuples(got) == _as_tuples(kilt_bm25.search(queries, 4))
      assert got[0][0].id.startswith("96-")
  finally:
    s.shutdown()


def _post(url, body: bytes, headers=None):
  req = urllib.request.Request(url, data=body, headers=headers or {
      "Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=5) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_search_r1_wire_format_and_scores(server, search_r1_bm25):
  code, reply = _post(server.url + "/retrieve", json.dumps(
      {"queries": ["Pavia cathedral dome"], "topk": 2, "return_scores": True}).encode())
  assert code == 200
  want = search_r1_bm25.search_with_scores(["Pavia cathedral dome"], 2)[0]
  assert [(r["document"]["id"], r["document"]["contents"], r["score"])
          for r in reply["result"][0]] == [
              (d.id, f'"{d.title}"\n{d.text}', pytest.approx(s)) for d, s in want]
  code, reply = _post(server.url + "/retrieve", json.dumps(
      {"queries": ["Pavia cathedral dome"], "topk": 2}).encode())
  assert [r["id"] for r in reply["result"][0]] == [d.id for d, _ in want]
  code, reply = _post(server.url + "/queries", json.dumps(
      {"queries": ["Pavia cathedral dome", "Pavia Genentech Atari Iowa"]}).encode())
  assert reply["answers"][0][0] == f"{want[0][0].id}\tPavia Cathedral   {want[0][0].text}"
  assert len(reply["answers"][1]) == 3  # k defaults to 3, as in R1-Searcher


def test_oversized_and_malformed_requests_get_4xx(server):
  client = HTTPRetriever(server.url, retries=3, backoff=5.0)
  start = time.perf_counter()
  with pytest.raises(retrieval.RetrieverRequestError,
                     match=r"HTTP 413: 5 queries; at most 4") as e:
    client.search(["a", "b", "c", "d", "e"], 3)
  assert e.value.code == 413
  with pytest.raises(ValueError, match=r"HTTP 413: query 0 has 150 characters"):
    client.search(["x" * 150], 3)
  with pytest.raises(ValueError, match=r"HTTP 400: k=9; at most 5"):
    client.search(["a"], 9)
  assert time.perf_counter() - start < 2  # a 4xx is never retried (backoff 5 s)

  url = server.url
  cases = [
      ("/queries", b"{not json", 400, "not JSON"),
      ("/queries", b'["a"]', 400, "must be a JSON object"),
      ("/queries", b'{"k": 3}', 400, "missing field 'queries'"),
      ("/retrieve", b'{"queries": "one string"}', 400, "list of strings"),
      ("/retrieve", b'{"queries": ["a"], "topk": "3"}', 400, "'topk' must be a positive"),
      ("/retrieve", b'{"queries": ["a"], "topk": 0}', 400, "'topk' must be a positive"),
      ("/queries", json.dumps({"queries": ["a " * 40] * 4, "pad": "x" * 2000}).encode(),
       413, "body of"),
      ("/search", b'{"queries": ["a"]}', 404, "no route POST /search"),
  ]
  for route, body, code, message in cases:
    got_code, reply = _post(url + route, body)
    assert (got_code, route) == (code, route) and message in reply["error"], reply
  with urllib.request.urlopen(url + "/health", timeout=5) as r:
    assert json.loads(r.read()) == {"status": "ok"}


def test_server_reports_a_failing_retriever_as_500():
  class Broken(retrieval.Retriever):
    def search(self, queries, k):
      raise RuntimeError("index exploded")

  s = retrieval.serve(Broken(), "127.0.0.1", 0)
  try:
    client = HTTPRetriever(s.url, retries=1, backoff=0.01)
    with pytest.raises(ConnectionError, match=r"after 2 attempts.*HTTP 500.*index exploded"):
      client.search(["q"], 1)
  finally:
    s.shutdown()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_client_survives_a_restart_then_fails_clearly(search_r1_bm25):
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  server = retrieval.serve(search_r1_bm25, "127.0.0.1", port)
  client = HTTPRetriever(url, retries=4, backoff=0.2, timeout=5)
  assert client.search(["Pavia cathedral"], 1)[0][0].title == "Pavia Cathedral"
  server.shutdown()

  # Down now; back 0.5 s later, within the retry window (0.2+0.4+0.8+1.6 s).
  restarted = []
  timer = threading.Timer(0.5, lambda: restarted.append(
      retrieval.serve(search_r1_bm25, "127.0.0.1", port)))
  timer.start()
  start = time.perf_counter()
  assert client.search(["Evan Morris Genentech"], 1)[0][0].title == "Evan Morris"
  assert time.perf_counter() - start >= 0.5  # it really waited for the restart
  timer.join()
  restarted[0].shutdown()

  # Stays down: bounded retries, then an error naming the URL, in bounded time.
  start = time.perf_counter()
  with pytest.raises(ConnectionError, match=rf"127.0.0.1:{port}/queries is "
                     r"unreachable after 5 attempts"):
    client.search(["anything"], 1)
  assert 3.0 - 0.1 <= time.perf_counter() - start < 6  # 0.2+0.4+0.8+1.6 s backoff


def test_client_times_out_on_a_server_that_never_answers():
  with socket.socket() as listener:  # accepts connections (backlog), never replies
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    client = HTTPRetriever(f"http://127.0.0.1:{port}", protocol="search_r1",
                           timeout=0.3, retries=1, backoff=0.05)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"/retrieve is unreachable after 2 "
                       r"attempts.*timed out"):
      client.search(["q"], 1)
    assert time.perf_counter() - start < 2


class _Named:
  """Answers every query with one document naming this retriever."""

  def __init__(self, name):
    self.name, self.calls = name, []

  def search(self, queries, k):
    self.calls.append(list(queries))
    return [[Doc(id=f"{self.name}:{q}", title=self.name, text=q)] for q in queries]


def test_routed_retriever_searches_each_querys_corpus_in_order():
  default, a, b = _Named("default"), _Named("a"), _Named("b")
  routed = RoutedRetriever(default, {"a": a, "b": b})
  queries = ["q0", "q1", "q2", "q3", "q4"]
  out = routed.search(queries, 1, corpora=["b", "", "a", "b", "a"])
  assert [docs[0].id for docs in out] == ["b:q0", "default:q1", "a:q2", "b:q3", "a:q4"]
  # One batched call per corpus, the queries in their order.
  assert (default.calls, a.calls, b.calls) == ([["q1"]], [["q2", "q4"]],
                                               [["q0", "q3"]])
  assert [d[0].id for d in routed.search(["x"], 1)] == ["default:x"]
  with pytest.raises(KeyError, match="'c'"):
    routed.search(["x"], 1, corpora=["c"])
  with pytest.raises(ValueError, match="2 queries but 1 corpus"):
    routed.search(["x", "y"], 1, corpora=["a"])
  with pytest.raises(ValueError, match="default corpus"):
    RoutedRetriever(default, {"": a})
