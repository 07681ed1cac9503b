"""The evaluation harness: the three modes' prompts and retrievals on a tiny
model, metrics against hand-computed values, resumption after a crash, the
LLM judge against a fake local endpoint, and launch/eval.py end to end."""

import dataclasses
import http.server
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from flax import nnx

from rsearch_jax import eval as eval_lib
from rsearch_jax import models
from rsearch_jax import prompts, rewards
from rsearch_jax.data import QAExample
from rsearch_jax.retrieval import Doc
from rsearch_jax.sampling import (DocumentFormat, Sampler, SamplerOutput,
                                  SamplingConfig)
from rsearch_jax.sampling._handoff import RetrievalHandoff, SearchRecord
from rsearch_jax.testing import CharTokenizer, DictRetriever

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOK = CharTokenizer()
FMT = DocumentFormat(top_k=2, doc_tokens=14)
CONFIG = SamplingConfig(max_prompt_len=768, max_len=900, max_new_tokens=40,
                        temperature=0.0, max_searches=2, doc_block_len=40)
QUESTIONS = [QAExample(str(i), q, (a,)) for i, (q, a) in enumerate([
    ("who directed the film x?", "anna"), ("where was bo born?", "oslo"),
    ("when did it open?", "1999"), ("what is the name of it?", "zed"),
    ("which city?", "rome")])]


def numpy_model(vocab_size: int, seed: int = 0, favour: int | None = None):
  """A small random Decoder with weights drawn in NumPy (no eager JAX
  initialisation to compile, which costs seconds per op on a loaded CPU);
  `favour` gets a large LM-head column so greedy decoding often picks it."""
  cfg = models.ModelConfig(vocab_size=vocab_size, hidden_size=64,
                           intermediate_size=128, num_layers=2, num_heads=4,
                           num_kv_heads=2)
  graphdef, shapes = nnx.split(nnx.eval_shape(
      lambda: models.Decoder(cfg, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda s: (rng.normal(0, 0.15, s.shape) + (
      len(s.shape) == 1)).astype(s.dtype), shapes)
  if favour is not None:
    state["lm_head"][...][:, favour] = rng.normal(0, 2.0, cfg.hidden_size)
  return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def model():
  return numpy_model(TOK.vocab_size, seed=3, favour=TOK.tag_id("<|end_of_query|>"))


@pytest.fixture(scope="module")
def agent_sampler(model):
  return Sampler(model, TOK, CONFIG, retriever=DictRetriever(), doc_format=FMT)


@pytest.fixture(scope="module")
def plain_sampler(model):
  return Sampler(model, TOK, CONFIG, retriever=None, doc_format=FMT)


class Recording:
  """Wraps a sampler, keeping the prompts of each call; raises on call
  number `fail_on` (1-based) to simulate a crash."""

  def __init__(self, sampler, fail_on=None):
    self.sampler, self.fail_on, self.calls = sampler, fail_on, []
    self.outputs = []

  def __call__(self, texts, seed=0):
    self.calls.append(list(texts))
    if len(self.calls) == self.fail_on:
      raise KeyboardInterrupt("simulated crash")
    self.outputs.append(self.sampler(texts, seed=seed))
    return self.outputs[-1]


# -- prompts -------------------------------------------------------------------


def test_document_block_is_the_agents_block():
  docs = [Doc("1", "Title a", "text one"), Doc("2", "", "text two")]
  handoff = RetrievalHandoff(None, TOK, DocumentFormat(doc_tokens=64), 8)
  agent_block = TOK.decode(handoff.build_block(docs))
  ours = prompts.format_documents([d.contents() for d in docs], "r1")
  # CharTokenizer drops capitals; the layout must be the same.
  assert TOK.decode(TOK.encode(ours)) + "\n\n" == agent_block
  assert ours == ("<|begin_of_documents|>\n(1)Title a\ntext one\n(2)text two\n"
                  "<|end_of_documents|>")
  assert prompts.format_documents([], "r1pp") == "<document>\nNone\n</document>"


@pytest.mark.parametrize("chat", ["chatml", "none"])
def test_baseline_prompts(chat):
  direct = prompts.render_direct_prompt("who is x?", chat)
  rag = prompts.render_rag_prompt("who is x?", ["d one", "d two"], "r1", chat)
  agent = prompts.render_prompt("who is x?", "r1", chat)
  for p in (direct, rag, agent):
    assert p.endswith("<think>") and "who is x?" in p
    assert p.startswith("<|im_start|>system\n" if chat == "chatml"
                        else "The User asks a question")
  assert "<|begin_of_query|>" in agent
  assert "query" not in direct and "<|begin_of_documents|>" not in direct
  assert "<|begin_of_query|>" not in rag
  assert ("who is x?\n\n<|begin_of_documents|>\n(1)d one\n(2)d two\n"
          "<|end_of_documents|>") in rag
  with pytest.raises(ValueError, match="chat='plain'"):
    prompts.render_direct_prompt("q", "plain")
  with pytest.raises(ValueError, match="method='x'"):
    prompts.render_rag_prompt("q", [], "x")


# -- the modes on a tiny model ----------------------------------------------------


def test_modes_prompts_and_retrievals(agent_sampler, plain_sampler):
  questions = QUESTIONS[:4]
  agent_sampler.handoff.retriever.calls.clear()
  agent = Recording(agent_sampler)
  _, rows = eval_lib.evaluate(agent, TOK, questions,
                              eval_lib.mode_prompt_fn("agent", "r1", "none"),
                              rewards.R1_TAGS, batch_size=2, mode="agent")
  assert agent.calls[0][:2] == [prompts.render_prompt(q.question, "r1", "none")
                                for q in questions[:2]]
  queries = [q for call in agent_sampler.handoff.retriever.calls for q in call]
  assert sum(r["retrievals"] for r in rows) == len(queries) > 0
  assert sorted(q for r in rows for q in r["queries"]) == sorted(queries)

  direct = Recording(plain_sampler)
  _, rows = eval_lib.evaluate(direct, TOK, questions,
                              eval_lib.mode_prompt_fn("direct", "r1", "none"),
                              rewards.R1_TAGS, batch_size=2, mode="direct")
  assert direct.calls[1] == [prompts.render_direct_prompt(q.question, "none")
                             for q in questions[2:]]
  assert [r["retrievals"] for r in rows] == [0] * 4
  # The model does write the query tag; without the hand-off nothing is
  # spliced (the whole completion is the model's own text).
  assert any("<|end_of_query|>" in r["gen_text_store"] for r in rows)
  for out in direct.outputs:
    for i in range(len(out.texts)):
      assert out.loss_mask[i, out.prompt_len:out.lengths[i]].all()

  retriever = DictRetriever({"which city?": [Doc("r", "rome", "the city")]})
  rag = eval_lib.NaiveRAG(retriever, top_k=2, doc_tokens=8)
  naive = Recording(plain_sampler)
  questions = QUESTIONS[:3] + QUESTIONS[4:]
  _, rows = eval_lib.evaluate(naive, TOK, questions,
                              eval_lib.mode_prompt_fn("naive_rag", "r1", "none"),
                              rewards.R1_TAGS, batch_size=2, mode="naive_rag",
                              rag=rag)
  # One retrieval per question, of the question text, before sampling.
  assert retriever.calls == [[q.question for q in questions[:2]],
                             [q.question for q in questions[2:]]]
  assert [r["retrievals"] for r in rows] == [1] * 4
  first = questions[0].question
  # DictRetriever echoes the query; documents are cut to 8 tokens (chars).
  assert rows[0]["docs"] == [f"doc 0 ab", f"doc 1 ab"]
  assert rows[3]["docs"] == ["rome\nthe"]
  assert naive.calls[0][0] == prompts.render_rag_prompt(
      first, ["doc 0 ab", "doc 1 ab"], "r1", "none") == rows[0]["prompt"]
  assert "<|begin_of_documents|>\n(1)rome\nthe\n<|end_of_documents|>" in (
      naive.calls[1][1])


def test_prompt_too_long_names_the_question(plain_sampler):
  with pytest.raises(ValueError, match=r"direct prompt of question 1 .*"
                     r"max_prompt_len is 768"):
    eval_lib.evaluate(plain_sampler, TOK, QUESTIONS[:2],
                      lambda q: q if q.startswith("who") else "x" * 800,
                      rewards.R1_TAGS, batch_size=2, mode="direct")


# -- metrics on known outputs ------------------------------------------------------


class FakeSampler:
  """Returns fixed completions: (segments, retrievals, stop reason) per
  question, looked up by the prompt text ("q: <question>")."""

  def __init__(self, script):
    self.script = script
    self.calls = 0

  def __call__(self, texts, seed=0):
    self.calls += 1
    rows = [self.script[t[len("q: "):]] for t in texts]
    encoded = [[(TOK.encode(s), r) for s, r in segs] for segs, _, _ in rows]
    p, width = 4, 4 + max(sum(len(ids) for ids, _ in e) for e in encoded)
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros_like(tokens)
    lengths = np.zeros(len(rows), np.int32)
    for i, e in enumerate(encoded):
      at = p
      for ids, retrieved in e:
        tokens[i, at:at + len(ids)] = ids
        mask[i, at:at + len(ids)] = 0 if retrieved else 1
        at += len(ids)
      lengths[i] = at
    return SamplerOutput(
        tokens=tokens, loss_mask=mask, logprobs=np.zeros(tokens.shape, np.float32),
        positions=np.zeros_like(tokens), lengths=lengths, prompt_len=p,
        num_searches=np.array([n for _, n, _ in rows], np.int32),
        stop_reasons=[s for _, _, s in rows],
        searches=[[SearchRecord("q", [], True)] * n for _, n, _ in rows],
        texts=["".join(s for s, _ in segs) for segs, _, _ in rows])


def _qa(i, question, answers, **labels):
  return QAExample(str(i), question, tuple(answers), extra=labels)


KNOWN = [_qa(0, "capital of france?", ["Paris"], hops=1),
         _qa(1, "what tower?", ["The Eiffel Tower"], hops=2),
         _qa(2, "which year?", ["1999", "nineteen ninety nine"], hops=2),
         _qa(3, "who wrote it?", ["Mark Twain"])]
DOCS = "<|begin_of_documents|>\n(1)paris\n<|end_of_documents|>\n\n"
SCRIPT = {
    "capital of france?": ([(" it is<|begin_of_query|>france<|end_of_query|>", False),
                            (DOCS, True),
                            ("paris</think><answer>paris</answer>", False)], 2, "stop"),
    "what tower?": ([("</think><answer>eiffel tower in paris</answer>", False)],
                    0, "stop"),
    "which year?": ([(" no idea, maybe", False)], 1, "budget"),
    "who wrote it?": ([("</think><answer>mark</answer>", False)], 0, "stop"),
}


def _known_run(**kw):
  return eval_lib.evaluate(FakeSampler(SCRIPT), TOK, KNOWN, lambda q: f"q: {q}",
                           rewards.R1_TAGS, batch_size=3, **kw)


def test_metrics_against_hand_computed_values():
  metrics, rows = _known_run()
  # em [1,0,0,0]; f1 [1, 2/3 (2 of 4 pred tokens, 2 of 2 gold), 0, 2/3
  # (1 of 1, 1 of 2)]; cover-EM [1,1,0,0]; retrievals [2,0,1,0]; answered
  # [1,1,0,1].
  expected = {"em": 0.25, "f1": 7 / 12, "cover_em": 0.5, "retrievals": 0.75,
              "answered": 0.75, "n": 4,
              "em/1hop": 1, "f1/1hop": 1, "cover_em/1hop": 1,
              "retrievals/1hop": 2, "answered/1hop": 1, "n/1hop": 1,
              "em/2hop": 0, "f1/2hop": 1 / 3, "cover_em/2hop": 0.5,
              "retrievals/2hop": 0.5, "answered/2hop": 0.5, "n/2hop": 2}
  assert metrics == pytest.approx(expected)
  assert [r["pred_ans"] for r in rows] == ["paris", "eiffel tower in paris", "",
                                           "mark"]
  assert rows[0]["gen_text_store"] == "".join(s for s, _ in SCRIPT[
      "capital of france?"][0])
  assert rows[2]["stop_reason_final"] == "budget"
  assert rows[2]["answer"] == ["1999", "nineteen ninety nine"]
  assert rows[0]["answer"] == "Paris"
  table = eval_lib.format_table([eval_lib.EvalResult("agent", "toy", metrics)])
  lines = table.splitlines()
  assert lines[0] == ("| mode | dataset | group | n | EM | F1 | cover-EM | judge |"
                      " retrievals/q | answered |")
  assert lines[2] == ("| agent | toy | all | 4 | 25.0 | 58.3 | 50.0 | off |"
                      " 0.75 | 75.0 |")
  assert lines[4] == ("| agent | toy | 2hop | 2 | 0.0 | 33.3 | 50.0 | off |"
                      " 0.50 | 50.0 |")


def test_synthetic_kinds_are_their_own_groups():
  # The world's two kinds of 2-hop question apart: "chained" (kind 2hop) and
  # "comparison"; 1-hop questions are the hops label's group already.
  labelled = [_qa(0, "capital of france?", ["Paris"], hops=1, kind="1hop"),
              _qa(1, "what tower?", ["The Eiffel Tower"], hops=2, kind="2hop"),
              _qa(2, "which year?", ["1999"], hops=2, kind="comparison"),
              _qa(3, "who wrote it?", ["Mark Twain"], hops=2, kind="2hop")]
  metrics, _ = eval_lib.evaluate(FakeSampler(SCRIPT), TOK, labelled,
                                 lambda q: f"q: {q}", rewards.R1_TAGS,
                                 batch_size=4)
  # cover-EM per row [1, 1, 0, 0]; retrievals [2, 0, 1, 0].
  assert metrics["n/chained"] == 2 and metrics["n/comparison"] == 1
  assert metrics["cover_em/chained"] == 0.5
  assert metrics["cover_em/comparison"] == 0.0
  assert metrics["retrievals/comparison"] == 1.0
  assert metrics["n/2hop"] == 3 and metrics["cover_em/2hop"] == pytest.approx(1 / 3)
  assert "n/1hop" in metrics and "em/1hop" in metrics


def test_rewards_score_each_rollout_alone():
  # R1-Searcher stage 2: F1 + format penalty. Per row (see above): 1 + 0,
  # 2/3 + 0, 0 - 2 (think never closed, no answer), 2/3 + 0.
  metrics, rows = _known_run(rewards=("f1", "format_penalty"))
  assert [r["reward"] for r in rows] == pytest.approx([1, 2 / 3, -2, 2 / 3])
  assert metrics["reward"] == pytest.approx(1 / 12)
  assert metrics["reward/2hop"] == pytest.approx((2 / 3 - 2) / 2)
  assert "reward" not in _known_run()[0]


def test_predictions_file_has_r1_searcher_fields(tmp_path, shared_data):
  path = tmp_path / "preds.jsonl"
  _, rows = _known_run(output=path)
  published = json.loads((shared_data / "r1_searcher" / "eval_results" /
                          "bamboogle_qwen.jsonl").read_text().splitlines()[0])
  written = [json.loads(line) for line in path.read_text().splitlines()]
  assert written == rows
  fields = set(published) - {"gpt4o_output"}
  assert fields <= set(written[0])
  for key in fields:
    assert type(written[0][key]) is type(published[key]), key


# -- resumption ----------------------------------------------------------------------


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, agent_sampler):
  prompt_fn = eval_lib.mode_prompt_fn("agent", "r1", "none")
  full = tmp_path / "full.jsonl"
  metrics, rows = eval_lib.evaluate(agent_sampler, TOK, QUESTIONS, prompt_fn,
                                    rewards.R1_TAGS, batch_size=2, output=full)
  cut = tmp_path / "cut.jsonl"
  crashing = Recording(agent_sampler, fail_on=2)
  with pytest.raises(KeyboardInterrupt):
    eval_lib.evaluate(crashing, TOK, QUESTIONS, prompt_fn, rewards.R1_TAGS,
                      batch_size=2, output=cut)
  assert len(cut.read_text().splitlines()) == 2  # the first batch, synced
  with open(cut, "a") as f:  # and half a line of the batch in flight
    f.write('{"index": 2, "question": "when')
  again = Recording(agent_sampler)
  metrics2, rows2 = eval_lib.evaluate(again, TOK, QUESTIONS, prompt_fn,
                                      rewards.R1_TAGS, batch_size=2, output=cut)
  assert len(again.calls) == 2  # batches 2 and 3 only
  assert cut.read_text() == full.read_text()
  assert rows2 == rows and metrics2 == metrics
  # A finished file: nothing to run, same metrics.
  idle = Recording(agent_sampler)
  assert eval_lib.evaluate(idle, TOK, QUESTIONS, prompt_fn, rewards.R1_TAGS,
                           batch_size=2, output=cut)[0] == metrics
  assert idle.calls == []


def test_resume_refuses_another_eval_set(tmp_path):
  path = tmp_path / "preds.jsonl"
  _known_run(output=path)
  other = list(KNOWN)
  other[1] = _qa(1, "what bridge?", ["x"])
  with pytest.raises(ValueError, match=re.escape(f"{path}:2: question 1 is")):
    eval_lib.evaluate(FakeSampler(SCRIPT), TOK, other, lambda q: f"q: {q}",
                      rewards.R1_TAGS, batch_size=3, output=path)
  with pytest.raises(ValueError, match=re.escape(f"{path}:3: index 2 is outside")):
    eval_lib.evaluate(FakeSampler(SCRIPT), TOK, KNOWN[:2], lambda q: f"q: {q}",
                      rewards.R1_TAGS, batch_size=3, output=path)
  with pytest.raises(ValueError, match="mode 'agent', not 'direct'"):
    _known_run(output=path, mode="direct")
  path.write_text(path.read_text() + "not json\n")
  with pytest.raises(ValueError, match=re.escape(f"{path}:5: not valid JSON")):
    _known_run(output=path)


# -- the judge ------------------------------------------------------------------------


class _FakeJudgeHandler(http.server.BaseHTTPRequestHandler):
  """An OpenAI-style /v1/chat/completions: True when every word of the gold
  answer (but "the") is in the prediction. Fails the first request with 503."""

  requests: list = []

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    type(self).requests.append((self.path, body, self.headers.get("Authorization")))
    if len(type(self).requests) == 1:
      self.send_response(503)
      self.end_headers()
      return
    if self.path != "/v1/chat/completions":
      self.send_response(404)
      self.end_headers()
      return
    text = body["messages"][0]["content"]
    gold = re.search(r"Golden Answer: (.*)\n", text).group(1).lower().split()
    pred = re.search(r"Predicted Answer: (.*)\n", text).group(1).lower().split()
    verdict = all(w in pred for w in gold if w != "the")
    out = json.dumps({"choices": [{"message": {"role": "assistant",
                                               "content": str(verdict)}}]})
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.end_headers()
    self.wfile.write(out.encode())

  def log_message(self, *args):
    pass


@pytest.fixture()
def judge_server():
  _FakeJudgeHandler.requests = []
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeJudgeHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()


def test_judge_through_fake_endpoint(tmp_path, judge_server):
  judge = eval_lib.Judge(f"{judge_server}/v1/chat/completions", model="fake",
                         api_key="k", backoff=0.01, workers=2)
  path = tmp_path / "preds.jsonl"
  plain, _ = _known_run(output=path)  # first without a judge
  metrics, rows = _known_run(output=path, judge=judge)  # resumed: judged now
  # Judged: paris (True), "eiffel tower in paris" (True: the tower's words),
  # no answer (not asked: 0), "mark" for Mark Twain (False).
  assert [r["judge"] for r in rows] == [1.0, 1.0, 0.0, 0.0]
  assert metrics["judge"] == 0.5 and metrics["judge/2hop"] == 0.5
  assert [r["judge_output"] for r in rows] == ["True", "True", "", "False"]
  assert {k: v for k, v in metrics.items() if "judge" not in k} == plain
  assert [json.loads(line)["judge"] for line in path.read_text().splitlines()] == [
      1.0, 1.0, 0.0, 0.0]
  reqs = _FakeJudgeHandler.requests
  assert len(reqs) == 4  # one 503 retried, then the three answers
  path_, body, auth = reqs[-1]
  assert auth == "Bearer k" and body["model"] == "fake"
  assert body["messages"][0]["content"].startswith(
      "Given a Question and its Golden Answer, verify whether the Predicted")
  table = eval_lib.format_table([eval_lib.EvalResult("agent", "toy", metrics)])
  assert "| agent | toy | all | 4 | 25.0 | 58.3 | 50.0 | 50.0 |" in table


def test_judge_errors_name_the_url(judge_server):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1/chat/completions"
  judge = eval_lib.Judge(closed, retries=1, backoff=0.01, timeout=2)
  with pytest.raises(eval_lib.JudgeError,
                     match=re.escape(f"judge {closed}: failed after 2 attempts")):
    judge.verdict("q", "a", "b")
  _FakeJudgeHandler.requests = [None]  # no 503 this time
  wrong = f"{judge_server}/nowhere"
  with pytest.raises(eval_lib.JudgeError,
                     match=re.escape(f"judge {wrong}: HTTP 404")):
    eval_lib.Judge(wrong).verdict("q", "a", "b")
  with pytest.raises(ValueError, match="expected http"):
    eval_lib.Judge("localhost:8000")
  assert eval_lib.parse_verdict("**False**. The answer is true") == 0.0
  assert eval_lib.parse_verdict(" True") == 1.0
  assert eval_lib.parse_verdict("cannot tell") == 0.0


# -- launch/eval.py end to end -------------------------------------------------------


def _tiny_hf_dir(path: pathlib.Path, corpus_texts, questions) -> pathlib.Path:
  """A byte-level BPE trained on the prompts (so they stay short) and a tiny
  random model, saved as an HF directory."""
  import tokenizers

  texts = list(corpus_texts)
  for q in questions:
    for chat in ("chatml",):
      texts += [prompts.render_prompt(q, "r1", chat),
                prompts.render_direct_prompt(q, chat),
                prompts.render_rag_prompt(q, corpus_texts[:3], "r1", chat)]
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=700, special_tokens=["<|im_start|>", "<|im_end|>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts * 3, trainer)
  path.mkdir(parents=True)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
  models.save_hf(numpy_model(tok.get_vocab_size()), path)
  return path


def test_launch_end_to_end(tmp_path, judge_server):
  questions = [("who founded the acme company?", "ada"),
               ("where is the river sal?", "tor"), ("when was bo born?", "1901")]
  corpus = [("acme", "acme company was founded by ada in tor."),
            ("sal", "the river sal flows through tor."),
            ("bo", "bo was born in 1901 in oslo.")]
  data = tmp_path / "toy_qa.jsonl"
  data.write_text("".join(json.dumps({"idx": i, "question": q, "answer": a}) + "\n"
                          for i, (q, a) in enumerate(questions)))
  corpus_file = tmp_path / "corpus.jsonl"
  corpus_file.write_text("".join(
      json.dumps({"id": str(i), "contents": f'"{t}"\n{x}'}) + "\n"
      for i, (t, x) in enumerate(corpus)))
  model_dir = _tiny_hf_dir(tmp_path / "model", [f"{t}\n{x}" for t, x in corpus],
                           [q for q, _ in questions])
  # A training run's checkpoint whose parameters are all zero: every logit
  # is 0, so greedy decoding repeats token 0 (<|im_start|>) for the whole
  # budget of 12 tokens. The random weights would not.
  from rsearch_jax import builders, checkpoint
  policy, _ = builders.load_policy(model_dir, add_tags=True)
  zeros = jax.tree.map(np.zeros_like, nnx.split(policy)[1])
  with checkpoint.Checkpointer(tmp_path / "run" / "checkpoints") as ckpt:
    ckpt.save(7, params=zeros, opt_state={}, meta={})
  out = tmp_path / "out"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(RSEARCH_NO_PROGRESS="1", HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, str(ROOT / "launch" / "eval.py"),
         "--config=" + str(ROOT / "configs" / "r1.py") + ":smollm2",
         f"--config.model.path={model_dir}", "--config.model.add_tags=True",
         f"--config.retriever.corpus={corpus_file}", "--config.mesh.fsdp=1",
         "--config.sampling.max_prompt_len=256", "--config.sampling.max_len=340",
         "--config.sampling.max_new_tokens=12", "--config.sampling.doc_block_len=48",
         "--config.sampling.top_k_docs=2", "--config.sampling.doc_tokens=16",
         f"--checkpoint={tmp_path / 'run'}", f"--data={data}", f"--out={out}", "--limit=2", "--batch_size=2",
         "--modes=agent,direct,naive_rag",
         f"--judge_url={judge_server}/v1/chat/completions", "--judge_model=fake"]
  _FakeJudgeHandler.requests = [None]  # no 503
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"policy parameters from {tmp_path / 'run'} step 7" in proc.stdout
  table = (out / "table.md").read_text()
  assert table.strip() in proc.stdout
  for mode, retrievals in (("agent", 0), ("direct", 0), ("naive_rag", 1)):
    rows = [json.loads(line) for line in
            (out / f"toy_qa.{mode}.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == [q for q, _ in questions[:2]]
    assert all(r["mode"] == mode and "judge" in r for r in rows)
    assert [r["retrievals"] for r in rows] == [retrievals] * 2
    assert f"| {mode} | toy_qa | all | 2 |" in table
    assert [(r["gen_text_store"], r["stop_reason_final"]) for r in rows] == [
        ("<|im_start|>" * 12, "budget")] * 2
  rag_rows = [json.loads(line) for line in
              (out / "toy_qa.naive_rag.jsonl").read_text().splitlines()]
  assert "acme company was founded by ada" in rag_rows[0]["prompt"]
  metrics = json.loads((out / "metrics.json").read_text())
  assert [m["mode"] for m in metrics] == ["agent", "direct", "naive_rag"]


def test_restore_errors_name_the_checkpoint(tmp_path, model):
  with pytest.raises(FileNotFoundError, match="no such directory"):
    eval_lib.restore_policy_params(model, tmp_path / "nowhere")
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    eval_lib.restore_policy_params(model, tmp_path / "run")


def test_fact_recall_counts_facts_completed_exactly(tmp_path):
  """`fact_recall` against an oracle that knows chosen sentences: a fact
  counts only when every token of its object is the argmax; years are not
  asked; BOS comes first."""
  from rsearch_jax.data import synthetic
  world = synthetic.make_world(synthetic.WorldConfig(
      num_people=12, num_films=6, num_companies=4, num_cities=4))
  from rsearch_jax.tokenizer import SentencePieceTokenizer
  tok = SentencePieceTokenizer.train([d.contents() for d in world.corpus()], 400,
                                     tmp_path)
  named = [f for f in world.facts
           if f.relation not in ("birth_year", "released_year")]
  internal = [f for f in named if world.is_internal(f)]
  corpus = [f for f in named if not world.is_internal(f)]
  # The oracle knows: all internal facts but two, of which it knows only the
  # object's first character; three corpus-only facts.
  partial, known = internal[:2], internal[2:] + corpus[:3]
  table = {}
  for f in known + partial:
    ids = [tok.bos_id] + tok.encode(world.sentence(f))
    stop = len(ids)
    if f in partial:  # up to the object's first character, then nothing
      stop = len(tok.encode(world.sentence(f)[:world.sentence(f).rindex(
          f.object) + 1])) + 1
    for t in range(1, stop):
      table[tuple(ids[:t])] = ids[t]
  seen_bos = []

  def oracle(tokens, positions):
    tokens, positions = np.asarray(tokens), np.asarray(positions)
    logits = np.zeros(tokens.shape + (tok.vocab_size,), np.float32)
    for b in range(tokens.shape[0]):
      n = int((positions[b] >= 0).sum())
      seen_bos.append(tokens[b, 0] == tok.bos_id)
      for t in range(n):
        logits[b, t, table.get(tuple(tokens[b, :t + 1]), 0)] = 1.0
    return logits, None

  got = eval_lib.fact_recall(oracle, tok, world, batch_size=7)
  assert got["internal"] == pytest.approx((len(internal) - 2) / len(internal))
  assert got["corpus"] == pytest.approx(3 / len(corpus))
  assert seen_bos and all(seen_bos)


# -- several samples per question: pass@k ----------------------------------------


class SeededSampler(FakeSampler):
  """FakeSampler at a temperature: a question's completion is
  script[question][seed // period] (with batches of `period` rollouts, one
  entry per sample)."""

  config = SamplingConfig(max_prompt_len=64, max_len=128, max_new_tokens=32,
                          temperature=1.0)

  def __init__(self, script, period):
    super().__init__(script)
    self.period = period

  def __call__(self, texts, seed=0):
    k = seed // self.period
    return FakeSampler({q: v[k] for q, v in self.script.items()})(texts, seed)


def _answer(text):
  return ([(f"</think><answer>{text}</answer>", False)], 0, "stop")


SAMPLED = {  # three samples per question; right answers marked *
    "capital of france?": [_answer("paris"), _answer("rome"), _answer("rome")],  # * - -
    "what tower?": [_answer("tower"), _answer("x"), _answer("the eiffel tower")],  # - - *
    "which year?": [_answer("2000"), _answer("2001"), _answer("2002")],  # - - -
    "who wrote it?": [_answer("mark twain")] * 3,  # * * *
}


def test_pass_at_k_against_hand_counts():
  metrics, rows = eval_lib.evaluate(SeededSampler(SAMPLED, 4), TOK, KNOWN,
                                    lambda q: f"q: {q}", rewards.R1_TAGS,
                                    batch_size=4, samples=3)
  # One row per rollout, in question order then sample.
  assert [(r["index"], r["sample"]) for r in rows] == [
      (i, s) for i in range(4) for s in range(3)]
  assert [r["pred_ans"] for r in rows[3:6]] == ["tower", "x", "the eiffel tower"]
  # em per rollout: [1,0,0], [0,0,1], [0,0,0], [1,1,1]; hops 1, 2, 2, none.
  assert metrics["n"] == 4 and metrics["samples"] == 3
  assert metrics["em"] == pytest.approx(5 / 12)
  assert metrics["pass"] == pytest.approx(3 / 4)
  assert metrics["n/2hop"] == 2
  assert metrics["em/2hop"] == pytest.approx(1 / 6)
  assert metrics["pass/2hop"] == pytest.approx(1 / 2)
  assert metrics["pass/1hop"] == 1.0 and metrics["em/1hop"] == pytest.approx(1 / 3)
  table = eval_lib.format_table([eval_lib.EvalResult("agent", "toy", metrics)])
  lines = table.splitlines()
  assert lines[0].endswith("| answered | pass@3 |")
  assert lines[2].startswith("| agent | toy | all | 4 | 41.7 |")
  assert lines[2].endswith("| 75.0 |") and lines[4].endswith("| 50.0 |")
  # One evaluation with samples, one without: k in the cells, "-" for none.
  greedy, _ = _known_run()
  mixed = eval_lib.format_table([eval_lib.EvalResult("agent", "toy", metrics),
                                 eval_lib.EvalResult("direct", "toy", greedy)],
                                per_label=False).splitlines()
  assert mixed[0].endswith("| pass@3 |")
  assert mixed[3].endswith("| - |")
  assert "pass" not in greedy  # one sample: no pass@k


def test_samples_need_a_temperature(agent_sampler):
  with pytest.raises(ValueError, match="samples=2 from a greedy sampler"):
    eval_lib.evaluate(agent_sampler, TOK, QUESTIONS, lambda q: q,
                      rewards.R1_TAGS, samples=2)
  with pytest.raises(ValueError, match="samples must be >= 1"):
    _known_run(samples=0)


def test_resume_with_samples_equals_uninterrupted_run(tmp_path, model,
                                                      agent_sampler):
  hot = Sampler(model, TOK, dataclasses.replace(CONFIG, temperature=1.0),
                retriever=DictRetriever(), doc_format=FMT)
  prompt_fn = eval_lib.mode_prompt_fn("agent", "r1", "none")
  run = lambda sampler, path, samples=2: eval_lib.evaluate(
      sampler, TOK, QUESTIONS, prompt_fn, rewards.R1_TAGS, batch_size=3,
      output=path, samples=samples)
  full = tmp_path / "full.jsonl"
  metrics, rows = run(hot, full)
  assert len(rows) == 10 and metrics["n"] == 5
  # The sampler did sample: some question's two rollouts differ.
  texts = {(r["index"], r["sample"]): r["gen_text_store"] for r in rows}
  assert any(texts[i, 0] != texts[i, 1] for i in range(5))
  cut = tmp_path / "cut.jsonl"
  with pytest.raises(KeyboardInterrupt):  # batches of 3 of the 10 rollouts
    run(Recording(hot, fail_on=3), cut)
  assert len(cut.read_text().splitlines()) == 6
  again = Recording(hot)
  assert run(again, cut) == (metrics, rows)
  assert len(again.calls) == 2  # rollouts 6-8 and 9
  assert cut.read_text() == full.read_text()
  # A file of two samples per question (sample-major: line 6 is question 0's
  # second) is not an evaluation of one.
  with pytest.raises(ValueError, match=re.escape(
      f"{full}:6: sample 1 of question 0, but this evaluation draws 1")):
    run(agent_sampler, full, samples=1)
