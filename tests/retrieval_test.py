"""Retrieval: corpus readers, BM25 (against a from-the-formula reference),
its on-disk cache, and the HTTP client and server on loopback in both
protocols, including a server that goes down mid-run."""

import json
import math
import re
import socket
import time

import numpy as np
import pytest

from rsearch_jax import retrieval
from rsearch_jax.retrieval import BM25Retriever, Doc, HTTPRetriever


@pytest.fixture(scope="module")
def search_r1_bm25(shared_data):
  return BM25Retriever.from_corpus(shared_data / "search_r1" / "corpus.jsonl")


@pytest.mark.parametrize("question,title", [
    ("Which lobbyist worked for Genentech and Roche in Washington?", "Evan Morris"),
    ("Who gathered an Algonkin vocabulary from Indians camped on the college grounds?",
     "Horatio Hale"),
    ("When was the Pavia cathedral begun and who was its architect?", "Pavia Cathedral"),
    ("Which Red Army airborne corps fought in the Vyazma operation?",
     "4th Airborne Corps (Soviet Union)"),
    ("Was the E.T. video game a financial failure for Atari?",
     "E.T. the Extra-Terrestrial (video game)"),
    ("Since when has Iowa 17 been designated as a highway?", "Iowa Highway 17"),
])
def test_bm25_ranks_the_right_passage_first(search_r1_bm25, question, title):
  assert search_r1_bm25.search([question], 3)[0][0].title == title


@pytest.mark.parametrize("question,title", [
    ("Who was the leader of the First Crusade, Godfrey of Bouillon?",
     "Godfrey of Bouillon"),
    ("Fermat primality test probable prime", "Fermat primality test"),
    ("Stokesay Castle fortified manor house Shropshire", "Stokesay Castle"),
    ("Which Chinese politician of the Gang of Four was Wang Hongwen?", "Wang Hongwen"),
])
def test_bm25_on_the_kilt_sample(shared_data, question, title):
  bm25 = BM25Retriever.from_corpus(
      shared_data / "r1_searcher" / "corpus_samples" / "filtered_kilt_sample_100.jsonl")
  assert bm25.search([question], 3)[0][0].title == title


def _reference_bm25(docs_tokens, query_tokens, k1=1.5, b=0.75):
  """BM25 from its formula as Lucene scores it (idf log(1 + (N - df + .5) /
  (df + .5)), and no constant (k1 + 1) factor, which does not change ranks),
  written independently of bm25s."""
  n = len(docs_tokens)
  avgdl = sum(len(d) for d in docs_tokens) / n
  scores = []
  for d in docs_tokens:
    s = 0.0
    for t in set(query_tokens):
      df = sum(t in dd for dd in docs_tokens)
      if not df:
        continue
      idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
      tf = d.count(t)
      s += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    scores.append(s)
  return np.array(scores)


def test_bm25_scores_match_the_formula():
  texts = ["red apples grow on apple trees in the orchard",
           "the orchard sells pears and apples",
           "trains run on rails between cities",
           "apple apple apple pie recipe",
           "a city with many trains and a big station"]
  docs = [Doc(str(i), "", t) for i, t in enumerate(texts)]
  bm25 = BM25Retriever(docs)
  # Our tokens: lowercase words minus English stopwords, stemmed the same way.
  import Stemmer
  stem = Stemmer.Stemmer("english").stemWord
  stop = {"the", "on", "in", "and", "a", "with"}
  tok = lambda s: [stem(w) for w in re.findall(r"\w+", s.lower()) if w not in stop]
  for query in ("apple orchard", "trains cities", "pie"):
    want = _reference_bm25([tok(t) for t in texts], tok(query))
    np.testing.assert_allclose(bm25.scores(query), want, rtol=1e-4, atol=1e-5)
    ranked = [d.id for d in bm25.search([query], 5)[0]]
    assert ranked == [str(i) for i in np.argsort(-want, kind="stable") if want[i] > 0]


def test_empty_queries_and_k(search_r1_bm25):
  out = search_r1_bm25.search(["", "   ", "the of and", "Pavia cathedral"], 50)
  assert out[0] == out[1] == out[2] == []
  assert 1 <= len(out[3]) <= 10


def test_index_cache_reused_and_invalidated(tmp_path):
  corpus = tmp_path / "c.jsonl"
  rows = [{"id": str(i), "contents": f'"T{i}"\nword{i} common text'} for i in range(20)]
  corpus.write_text("\n".join(json.dumps(r) for r in rows))
  BM25Retriever.from_corpus(corpus)
  caches = list(tmp_path.glob(".c.jsonl.bm25-*"))
  assert len(caches) == 1
  stamp = (caches[0] / "meta.json").stat().st_mtime_ns
  again = BM25Retriever.from_corpus(corpus)
  assert (caches[0] / "meta.json").stat().st_mtime_ns == stamp  # reused
  assert again.search(["word7"], 1)[0][0].id == "7"
  rows[7]["contents"] = '"T7"\nchanged common text'
  corpus.write_text("\n".join(json.dumps(r) for r in rows))
  fresh = BM25Retriever.from_corpus(corpus)
  assert len(list(tmp_path.glob(".c.jsonl.bm25-*"))) == 2  # a new index
  assert fresh.search(["word7"], 1)[0] == []
  assert fresh.search(["changed"], 1)[0][0].id == "7"


def test_read_only_corpus_caches_under_rsearch_cache(shared_data, tmp_path, monkeypatch):
  monkeypatch.setenv("RSEARCH_CACHE", str(tmp_path))
  BM25Retriever.from_corpus(shared_data / "search_r1" / "corpus.jsonl")
  assert list((tmp_path / "bm25").glob("corpus.jsonl-*"))


def test_corpus_readers_on_shipped_files(shared_data):
  cs = shared_data / "r1_searcher" / "corpus_samples"
  kilt = retrieval.load_corpus(cs / "filtered_kilt_sample_100.jsonl")
  assert all(len(d.text.split()) <= 100 for d in kilt)
  first = json.loads((cs / "filtered_kilt_sample_100.jsonl").open().readline())
  words = "".join(first["text"]).split()
  assert kilt[0].title == first["wikipedia_title"]
  assert kilt[0].text == " ".join(words[:100])
  tsv = retrieval.load_corpus(cs / "train_kilt_full_page_sample_100.tsv")
  assert tsv[0].id == "0" and tsv[0].title == "A" and tsv[0].text.startswith("A A (named")
  abstracts = retrieval.load_corpus(cs / "train_np_title_abs_sample_100.tsv")
  assert abstracts[0].title == "Professional Football League of Ukraine"
  assert abstracts[0].text.startswith("Professional Football League of Ukraine (Ukrainian")
  sr1 = retrieval.load_corpus(shared_data / "search_r1" / "corpus.jsonl")
  assert [d.title for d in sr1][:2] == ["Evan Morris", "Horatio Hale"]


def test_malformed_lines_name_file_and_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "0", "contents": "\\"A\\"\\ntext"}\n{"id": 1, "contents": \n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
    retrieval.load_corpus(bad)
  bad.write_text('{"id": "0", "text": "no contents"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field 'contents'"):
    retrieval.load_corpus(bad, format="jsonl")
  kilt = tmp_path / "k.jsonl"
  kilt.write_text('{"wikipedia_title": "X", "text": "not a list"}\n')
  with pytest.raises(ValueError, match=r"k.jsonl:1: field 'text' should be list"):
    retrieval.load_corpus(kilt)
  tsv = tmp_path / "t.tsv"
  tsv.write_text("0\tfine   text\nno tab here\n")
  with pytest.raises(ValueError, match=r"t.tsv:2: expected 'id<TAB>text'"):
    retrieval.load_corpus(tsv)
  with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
    retrieval.load_corpus(tmp_path / "nowhere.jsonl")


# --- HTTP --------------------------------------------------------------------


@pytest.fixture()
def server(search_r1_bm25):
  s = retrieval.serve(search_r1_bm25, "127.0.0.1", 0,
                      retrieval.Limits(max_queries=4, max_query_chars=100, max_k=5))
  yield s
  s.shutdown()
  s.server_close()


@pytest.mark.parametrize("protocol", ["r1searcher", "search_r1"])
def test_http_round_trip_equals_in_process(server, search_r1_bm25, protocol):
  url = "http://127.0.0.1:%d" % server.server_address[1]
  client = HTTPRetriever(url, protocol=protocol, retries=0)
  queries = ["Pavia cathedral architect", "", "Genentech lobbyist"]
  got = client.search(queries, 3)
  want = search_r1_bm25.search(queries, 3)
  assert [[(d.id, d.title, d.text) for d in r] for r in got] == [
      [(d.id, d.title, d.text) for d in r] for r in want]


def test_oversized_and_malformed_requests_get_4xx(server):
  url = "http://127.0.0.1:%d" % server.server_address[1]
  client = HTTPRetriever(url, retries=0)
  with pytest.raises(ValueError, match=r"HTTP 413: .*5 queries; at most 4"):
    client.search(["a", "b", "c", "d", "e"], 3)
  with pytest.raises(ValueError, match=r"HTTP 413: .*query 0 has 150 characters"):
    client.search(["x" * 150], 3)
  with pytest.raises(ValueError, match=r"HTTP 400: .*k=9; at most 5"):
    client.search(["a"], 9)
  import urllib.error
  import urllib.request
  req = urllib.request.Request(url + "/queries", data=b"{not json",
                               headers={"Content-Type": "application/json"})
  with pytest.raises(urllib.error.HTTPError) as e:
    urllib.request.urlopen(req, timeout=5)
  assert e.value.code == 400 and b"not JSON" in e.value.read()


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
  server.server_close()

  # Down now; back 0.3 s later, within the retry window (0.2+0.4+0.8+1.6 s).
  import threading
  restarted = []
  threading.Timer(0.3, lambda: restarted.append(
      retrieval.serve(search_r1_bm25, "127.0.0.1", port))).start()
  assert client.search(["Evan Morris Genentech"], 1)[0][0].title == "Evan Morris"
  restarted[0].shutdown()
  restarted[0].server_close()

  # Stays down: bounded retries, then an error naming the URL.
  start = time.perf_counter()
  with pytest.raises(ConnectionError, match=rf"127.0.0.1:{port}/queries is "
                     r"unreachable after 5 attempts"):
    client.search(["anything"], 1)
  assert time.perf_counter() - start < 10
