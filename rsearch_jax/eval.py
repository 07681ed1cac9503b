"""Evaluation of a policy on question sets: EM, F1, cover-EM, retrievals, and
an optional LLM judge, in three modes.

Modes (MODES):
  agent       the search agent: retrieval in the loop (the Sampler's hand-off).
  direct      no search: think, then answer from the model's own knowledge (a
              Sampler built without a retriever, so the query tag is an
              ordinary token).
  naive_rag   retrieve top-k once for the question text, show the documents in
              the prompt (R1-Searcher's layout), then think and answer without
              further search (a Sampler without a retriever).

Main entry points:
  evaluate(sampler, tokenizer, questions, prompt_fn, reward_tags, ...)
      -> (metrics, predictions): greedy rollouts (the sampler's temperature
      decides); metrics overall and per label (e.g. internal / corpus-only,
      hops); predictions in the fields of R1-Searcher's published outputs
      (question, answer, pred_ans, stop_reason_final, gen_text_store) plus
      ours. With `output=`, predictions are appended to a JSONL file as each
      batch finishes, and a rerun skips the questions already there. With
      `samples=k` (a sampler with a temperature), k rollouts per question:
      the metrics average them, and `pass` is pass@k (the share of
      questions with at least one exact match), what RL that sharpens the
      policy could at best make greedy.
  mode_prompt_fn(mode, method, chat)   the prompt function of a mode.
  NaiveRAG(retriever, top_k, doc_tokens)   the one-shot retrieval of naive_rag.
  Judge(url, model=...)    R1-Searcher's LLM-as-judge over an OpenAI-compatible
                           chat-completions endpoint.
  read_predictions(path)   a predictions JSONL -> rows (file:line errors).
  restore_policy_params(model, checkpoint, step)   a training run's policy.
  fact_recall(model, tokenizer, world)   what a model of the synthetic world
                           knows without documents: the share of internal
                           (and, as the guessing baseline, corpus-only) facts
                           it completes exactly.
  EvalResult, format_table(results)   a Markdown table of (mode, dataset) runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np

from rsearch_jax._jsonl import read_objects
from rsearch_jax import metrics as metrics_lib
from rsearch_jax import prompts as prompts_lib
from rsearch_jax import rewards as rewards_lib

MODES = ("agent", "direct", "naive_rag")

# Per-question values averaged into the metrics (plus "judge" when judged).
METRIC_KEYS = ("em", "f1", "cover_em", "retrievals", "answered")
# Question kind (a synthetic label) -> its group in the metrics; 1-hop
# questions are the "1hop" group of the hops label already.
KIND_LABELS = {"2hop": "chained", "comparison": "comparison"}


# ---------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NaiveRAG:
  """The naive_rag mode's retrieval: `top_k` documents for the question text,
  each cut to `doc_tokens` tokens of the policy's tokenizer (the budget the
  agent's document blocks give each document)."""

  retriever: Any
  top_k: int = 3
  doc_tokens: int = 64


def mode_prompt_fn(mode: str, method: str = "r1", chat: str = "chatml"
                   ) -> Callable[..., str]:
  """The prompt function of `mode`: question -> prompt for agent and direct,
  (question, document texts) -> prompt for naive_rag."""
  if mode == "agent":
    return lambda q: prompts_lib.render_prompt(q, method, chat)
  if mode == "direct":
    return lambda q: prompts_lib.render_direct_prompt(q, chat)
  if mode == "naive_rag":
    return lambda q, docs: prompts_lib.render_rag_prompt(q, docs, method, chat)
  raise ValueError(f"mode={mode!r}: expected one of {list(MODES)}")


def _retrieve_docs(rag: NaiveRAG, tokenizer, questions: list[str]) -> list[list[str]]:
  """Document texts for each question, each cut to rag.doc_tokens tokens."""
  found = rag.retriever.search(list(questions), rag.top_k)
  if len(found) != len(questions):
    raise ValueError(f"retriever returned {len(found)} results for "
                     f"{len(questions)} queries")
  out = []
  for docs in found:
    texts = []
    for d in docs[:rag.top_k]:
      ids = tokenizer.encode(d.contents())
      texts.append(tokenizer.decode(ids[:rag.doc_tokens]) if len(
          ids) > rag.doc_tokens else d.contents())
    out.append(texts)
  return out


# ---------------------------------------------------------------------------
# The evaluation loop
# ---------------------------------------------------------------------------


def _labels(q) -> dict[str, str]:
  """Groups a question belongs to, from its optional labels (attributes, or
  fields of a QAExample's `extra`)."""
  extra = getattr(q, "extra", None) or {}

  def get(name):
    value = getattr(q, name, None)
    return extra.get(name) if value is None else value

  out = {}
  internal = get("internal")
  if internal is not None:
    out["knowledge"] = "internal" if internal else "corpus"
  hops = get("hops")
  if hops is not None:
    out["hops"] = f"{hops}hop"
  # The synthetic world's two kinds of 2-hop question, apart: "chained"
  # (2-hop compositional) and "comparison".
  kind = get("kind")
  if kind in KIND_LABELS:
    out["kind"] = KIND_LABELS[kind]
  return out


def _first(*values):
  return next(v for v in values if v is not None)


def _gold_json(gold: Sequence[str]) -> str | list[str]:
  """R1-Searcher's `answer` field: a single answer stays a string."""
  return gold[0] if len(gold) == 1 else list(gold)


def _score(q, index: int, sample: int, mode: str, prompt: str, out, i: int,
           tokenizer, reward_tags, pre_retrievals: int, docs: list[str] | None,
           rewards: Sequence[str] = ()) -> dict[str, Any]:
  segs = out.segments(i, tokenizer)
  trace = rewards_lib.parse_trace(segs, reward_tags)
  pred = trace.answer or ""
  gold = list(q.answers)
  row = dict(
      question=q.question, answer=_gold_json(gold), pred_ans=pred,
      stop_reason_final=out.stop_reasons[i],
      gen_text_store="".join(t for t, _ in segs),
      index=index, idx=str(_first(getattr(q, "idx", None),
                                  getattr(q, "id", None), index)),
      sample=sample, mode=mode,
      em=float(rewards_lib.exact_match(pred, gold)),
      f1=float(rewards_lib.f1(pred, gold)),
      cover_em=float(rewards_lib.cover_exact_match(pred, gold)),
      retrievals=pre_retrievals + int(out.num_searches[i]),
      answered=float(trace.answer is not None),
      labels=_labels(q), prompt=prompt,
      queries=[s.query for s in out.searches[i] if s.ran])
  if docs is not None:
    row["docs"] = docs
  if rewards:  # the rollout scored alone (a group reward sees a group of one)
    row["reward"] = rewards_lib.score_group([segs], gold, reward_tags, rewards)[0][0]
  return row


def evaluate(sampler, tokenizer, questions: Sequence[Any],
             prompt_fn: Callable[..., str], reward_tags, *,
             batch_size: int = 16, seed: int = 0, mode: str = "agent",
             rag: NaiveRAG | None = None,
             output: str | os.PathLike | None = None,
             judge: Judge | None = None, progress: str | None = None,
             rewards: Sequence[str] = (), samples: int = 1
             ) -> tuple[dict[str, float], list[dict[str, Any]]]:
  """Rolls out every question `samples` times and scores the answers.

  Args:
    sampler: a Sampler (its temperature decides greedy or not; for direct and
      naive_rag, one built without a retriever), or anything with the same
      call and output.
    tokenizer: the policy's tokenizer.
    questions: objects with `.question` and `.answers` (and optionally
      `.idx`, and `.internal`, `.hops` labels, also read from a QAExample's
      `extra`, used to split the metrics).
    prompt_fn: question text -> prompt; with `rag`, (question text, document
      texts) -> prompt.
    reward_tags: the method's TagSet for parsing traces.
    batch_size: rollouts per sampler call (the last batch is padded by
      repeating its first question, and the repeats are dropped). The
      rollouts are ordered sample-major (every question's first sample,
      then every question's second ...); batch k always holds rollouts
      [k*batch_size, (k+1)*batch_size) of that order and uses seed
      `seed + k*batch_size`, so a resumed run samples what an uninterrupted
      one would.
    mode: recorded in each prediction (and checked on resume).
    rag: naive_rag's one retrieval per question before sampling; counted in
      `retrievals`, its documents shown by `prompt_fn` and kept in `docs`.
    output: a predictions JSONL. Each batch's rows are appended and synced
      as soon as it finishes; questions already in the file (same index and
      question text) are not run again, and the metrics cover every row.
    judge: an LLM judge; each row then gets `judge` (1.0 correct, 0.0 not)
      and `judge_output`, and the metrics `judge`.
    progress: description of a tqdm bar over the rollouts (None: no bar).
    rewards: reward names (rsearch_jax.rewards); each row then gets `reward`,
      their sum for its rollout alone, and the metrics `reward`.
    samples: rollouts per question (each row's `sample`); more than 1 needs
      a sampler with a temperature above 0.

  Returns:
    metrics: em, f1, cover_em, retrievals, answered (fraction with an answer
      span), judge (with a judge), each the mean over the rollouts and also
      per label as "<metric>/<label>"; n (questions); with samples > 1,
      `samples` and `pass` (pass@samples, also per label).
    predictions: one dict per rollout, in question order (then sample).

  Raises:
    ValueError: a prompt longer than the sampler's max_prompt_len (naming the
      question), several samples from a greedy sampler, or an `output` file
      that belongs to another evaluation (naming the file and line).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if samples < 1:
    raise ValueError(f"samples must be >= 1, got {samples}")
  temperature = getattr(getattr(sampler, "config", None), "temperature", None)
  if samples > 1 and temperature == 0:
    raise ValueError(f"samples={samples} from a greedy sampler (temperature "
                     "0) would repeat one rollout; give the sampler a "
                     "temperature above 0")
  path = pathlib.Path(output) if output is not None else None
  num_q = len(questions)
  done: dict[int, dict[str, Any]] = {}  # rollout number -> its row
  if path is not None:
    done = {r.get("sample", 0) * num_q + r["index"]: r
            for r in _resume_rows(path, questions, mode, samples)}
  if judge is not None:
    _judge_missing(judge, path, done)
  max_prompt = getattr(getattr(sampler, "config", None), "max_prompt_len", None)
  total = num_q * samples
  bar = (metrics_lib.progress(total, desc=progress, initial=len(done))
         if progress is not None else None)
  for start in range(0, total, batch_size):
    jobs = [j for j in range(start, min(start + batch_size, total))
            if j not in done]
    if not jobs:
      continue
    todo = [j % num_q for j in jobs]
    chunk = [questions[i] for i in todo]
    docs = (_retrieve_docs(rag, tokenizer, [q.question for q in chunk])
            if rag is not None else None)
    texts = [prompt_fn(q.question, docs[j]) if rag is not None
             else prompt_fn(q.question) for j, q in enumerate(chunk)]
    if max_prompt is not None:
      for i, text in zip(todo, texts):
        n = len(tokenizer.encode(text))
        if n > max_prompt:
          raise ValueError(
              f"{mode} prompt of question {i} ({questions[i].question[:60]!r})"
              f" has {n} tokens; sampling.max_prompt_len is {max_prompt}")
    out = sampler(texts + [texts[0]] * (batch_size - len(texts)),
                  seed=seed + start)
    rows = [_score(q, i, job // num_q, mode, texts[j], out, j, tokenizer,
                   reward_tags, 1 if rag is not None else 0,
                   docs[j] if docs is not None else None, rewards)
            for j, (job, i, q) in enumerate(zip(jobs, todo, chunk))]
    if judge is not None:
      judge.judge_rows(rows)
    if path is not None:
      _append_rows(path, rows)
    done.update(zip(jobs, rows))
    if bar is not None:
      bar.update(len(rows))
  if bar is not None:
    bar.close()
  rows = sorted(done.values(), key=lambda r: (r["index"], r.get("sample", 0)))
  return _aggregate(rows, judged=judge is not None, samples=samples), rows


def _aggregate(rows: list[dict[str, Any]], *, judged: bool = False,
               samples: int = 1) -> dict[str, float]:
  """Means over the rollouts, overall and per label; with several samples
  per question, pass@samples over the questions too."""
  keys = METRIC_KEYS + (("judge",) if judged else ())
  if rows and all("reward" in r for r in rows):
    keys += ("reward",)

  def means(members):
    out = {k: float(np.mean([r[k] for r in members])) for k in keys}
    solved: dict[int, float] = {}
    for r in members:
      solved[r["index"]] = max(solved.get(r["index"], 0.0), r["em"])
    out["n"] = float(len(solved))
    if samples > 1:
      out["pass"] = float(np.mean(list(solved.values())))
    return out

  out = means(rows) if rows else {**{k: 0.0 for k in keys}, "n": 0.0}
  if samples > 1:
    out["samples"] = float(samples)
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    for value in r["labels"].values():
      groups.setdefault(value, []).append(r)
  for label, members in sorted(groups.items()):
    out.update({f"{k}/{label}": v for k, v in means(members).items()})
  return out


# ---------------------------------------------------------------------------
# Predictions files (append per batch, resume)
# ---------------------------------------------------------------------------


def _append_rows(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
  """Appends rows and syncs, so a crash loses at most the batch in flight."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    f.flush()
    os.fsync(f.fileno())


def _rewrite_rows(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
  """Replaces the file atomically (write a temporary file, then rename)."""
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The rows of a predictions JSONL, in file order.

  A last line without its newline (a write cut by a crash) is ignored.

  Raises:
    ValueError: a line that is not a JSON object, naming file:line.
  """
  rows = []
  for lineno, _, row in read_objects(path, drop_cut_end=True):
    row["_line"] = lineno
    rows.append(row)
  return rows


def _resume_rows(path: pathlib.Path, questions: Sequence[Any], mode: str,
                 samples: int = 1) -> list[dict[str, Any]]:
  """The rows already in `path`, checked against this evaluation; a cut last
  line is removed from the file so that appends start on a fresh line."""
  if not path.exists():
    return []
  rows = read_predictions(path)
  with open(path, "rb+") as f:
    data = f.read()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
      f.truncate(keep)
  seen = set()
  for row in rows:
    where = f"{path}:{row.pop('_line')}"
    missing = [k for k in ("index", "question", "mode") + METRIC_KEYS
               if k not in row]
    if missing:
      raise ValueError(f"{where}: not a predictions row (missing {missing})")
    i = row["index"]
    if not isinstance(i, int) or not 0 <= i < len(questions):
      raise ValueError(
          f"{where}: index {i!r} is outside this eval set of {len(questions)} "
          "questions; it holds predictions of another evaluation (use "
          "another output file)")
    if row["question"] != questions[i].question:
      raise ValueError(
          f"{where}: question {i} is {row['question'][:60]!r} but this eval "
          f"set's is {questions[i].question[:60]!r}; the file holds "
          "predictions of another eval set (use another output file)")
    if row["mode"] != mode:
      raise ValueError(f"{where}: predictions of mode {row['mode']!r}, not "
                       f"{mode!r} (use another output file)")
    sample = row.get("sample", 0)
    if not isinstance(sample, int) or not 0 <= sample < samples:
      raise ValueError(
          f"{where}: sample {sample!r} of question {i}, but this evaluation "
          f"draws {samples} per question (use another output file)")
    if (i, sample) in seen:
      raise ValueError(f"{where}: sample {sample} of question {i} appears twice")
    seen.add((i, sample))
  return rows


def _judge_missing(judge: Judge, path: pathlib.Path | None,
                   done: dict[int, dict[str, Any]]) -> None:
  """Judges resumed rows written without a judge, and rewrites the file."""
  missing = [r for r in done.values() if "judge" not in r]
  if not missing:
    return
  judge.judge_rows(missing)
  if path is not None:
    _rewrite_rows(path, [done[i] for i in sorted(done)])


# ---------------------------------------------------------------------------
# LLM judge
# ---------------------------------------------------------------------------

# R1-Searcher's judge prompt (evaluation/metric_calc_gpt_as_judge.py), asked
# of gpt-4o-mini there; its verdict is their ACC_L.
JUDGE_PROMPT = (
    "Given a Question and its Golden Answer, verify whether the Predicted "
    "Answer is correct. The prediction is correct if it fully aligns with the "
    "meaning and key information of the Golden Answer. Respond with True if "
    "the prediction is correct and False otherwise.\n\n"
    "Question: {question}\n"
    "Golden Answer: {reference}\n"
    "Predicted Answer: {prediction}\n")

_VERDICT = re.compile(r"\b(true|false)\b", re.IGNORECASE)


class JudgeError(RuntimeError):
  """The judge endpoint failed or answered something unreadable."""


def parse_verdict(text: str) -> float:
  """1.0 when the judge's reply says True first, else 0.0 (False, or no
  verdict at all: counted as not correct)."""
  m = _VERDICT.search(text or "")
  return 1.0 if m and m.group(1).lower() == "true" else 0.0


@dataclasses.dataclass(frozen=True)
class Judge:
  """An LLM judge behind an OpenAI-compatible chat-completions endpoint.

  Attributes:
    url: the endpoint's full URL, e.g.
      "http://127.0.0.1:8000/v1/chat/completions" (vLLM, llama.cpp server) or
      "https://api.openai.com/v1/chat/completions".
    model: the `model` field of each request.
    api_key: sent as a Bearer token when set.
    timeout: seconds per request.
    retries: further attempts after a connection error, a timeout, HTTP 429
      or 5xx (with `backoff * 2**attempt` seconds between); other HTTP errors
      and unreadable replies fail at once.
    workers: requests in flight at once.
    max_tokens: the reply's token budget.
  """

  url: str
  model: str = "gpt-4o-mini"
  api_key: str | None = None
  timeout: float = 60.0
  retries: int = 3
  backoff: float = 1.0
  workers: int = 8
  max_tokens: int = 1024

  def __post_init__(self):
    if not re.match(r"https?://", self.url):
      raise ValueError(f"judge url {self.url!r}: expected http:// or https://")
    if self.retries < 0 or self.workers < 1 or self.timeout <= 0:
      raise ValueError(f"judge {self.url}: bad retries={self.retries} / "
                       f"workers={self.workers} / timeout={self.timeout}")

  def complete(self, prompt: str) -> str:
    """The endpoint's reply to one user message."""
    body = json.dumps({"model": self.model, "max_tokens": self.max_tokens,
                       "temperature": 0.0,
                       "messages": [{"role": "user", "content": prompt}]})
    headers = {"Content-Type": "application/json"}
    if self.api_key:
      headers["Authorization"] = f"Bearer {self.api_key}"
    last = ""
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.backoff * 2 ** (attempt - 1))
      request = urllib.request.Request(self.url, data=body.encode(),
                                       headers=headers, method="POST")
      try:
        with urllib.request.urlopen(request, timeout=self.timeout) as resp:
          raw = resp.read()
      except urllib.error.HTTPError as e:
        detail = e.read()[:200].decode("utf-8", "replace")
        last = f"HTTP {e.code}: {detail}"
        if e.code == 429 or e.code >= 500:
          continue
        raise JudgeError(f"judge {self.url}: {last}") from None
      except (urllib.error.URLError, socket.timeout, TimeoutError,
              ConnectionError) as e:
        last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        continue
      try:
        return json.loads(raw)["choices"][0]["message"]["content"] or ""
      except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(
            f"judge {self.url}: not a chat-completions reply: "
            f"{raw[:200].decode('utf-8', 'replace')!r}") from None
    raise JudgeError(f"judge {self.url}: failed after {self.retries + 1} "
                     f"attempts; last error: {last}")

  def verdict(self, question: str, gold: str | Sequence[str], pred: str
              ) -> tuple[float, str]:
    """(1.0 or 0.0, the judge's reply). An empty prediction is 0.0 without
    asking."""
    if not pred.strip():
      return 0.0, ""
    reference = gold if isinstance(gold, str) else (
        gold[0] if len(gold) == 1 else json.dumps(list(gold), ensure_ascii=False))
    reply = self.complete(JUDGE_PROMPT.format(
        question=question, reference=reference, prediction=pred))
    return parse_verdict(reply), reply

  def judge_rows(self, rows: list[dict[str, Any]]) -> None:
    """Adds `judge` and `judge_output` to each prediction row, in place."""
    def one(row):
      return self.verdict(row["question"], row["answer"], row["pred_ans"])

    with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
      for row, (score, reply) in zip(rows, pool.map(one, rows)):
        row["judge"], row["judge_output"] = score, reply


# ---------------------------------------------------------------------------
# A trained policy
# ---------------------------------------------------------------------------


def restore_policy_params(model, checkpoint: str | os.PathLike,
                          step: int | None = None) -> int:
  """Loads a training run's policy parameters into `model`; returns the step.

  The trainer saves `nnx.split(policy)[1]` as the checkpoint's `params` item,
  so `model` (built from the run's config: same architecture and vocabulary,
  hence the same model.add_tags) is the restore target, shardings included.

  Args:
    model: the policy to overwrite, in place.
    checkpoint: a run's workdir (holding checkpoints/) or the checkpoints
      folder itself.
    step: which checkpoint; None for the latest.

  Raises:
    FileNotFoundError: no such folder, or no checkpoint in it.
    checkpoint.CheckpointError: a checkpoint that does not fit `model`
      (naming the parameter and both shapes) or cannot be read.
  """
  from flax import nnx

  from rsearch_jax.checkpoint import Checkpointer

  folder = pathlib.Path(checkpoint).expanduser()
  if (folder / "checkpoints").is_dir():
    folder = folder / "checkpoints"
  if not folder.is_dir():
    raise FileNotFoundError(f"checkpoint {checkpoint}: no such directory")
  with Checkpointer(folder) as ckpt:
    if step is None:
      step = ckpt.latest_step()
      if step is None:
        raise FileNotFoundError(f"checkpoint {checkpoint}: no checkpoint in {folder}")
    params, _, _, _ = ckpt.restore(step, params_like=nnx.split(model)[1])
  nnx.update(model, params)
  return int(step)


# ---------------------------------------------------------------------------
# Knowledge without documents (the synthetic world)
# ---------------------------------------------------------------------------


def fact_recall(model, tokenizer, world, *, batch_size: int = 64
                ) -> dict[str, float]:
  """What `model` knows of `world` without its documents.

  For each fact whose object is a name (a person, film, company or city;
  years are left out, since their first pieces are a guess), the model reads
  its corpus sentence up to the object ("Doril Shibrar was born in the city
  of") and the fact counts as recalled when greedy decoding would write the
  object's tokens: the argmax at every position of the object is its next
  token (one teacher-forced pass). Rows start with BOS when the tokenizer
  has one, as the pretraining rows do.

  Returns:
    {"internal": share of the internal facts recalled, "corpus": the same
    for the facts only the corpus states: what guessing scores, since the
    model never read them outside documents}.
  """
  import jax.numpy as jnp

  bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  rows = []  # (ids, first object index, end of object, internal)
  for fact in world.facts:
    if fact.relation in ("birth_year", "released_year"):
      continue
    sentence = world.sentence(fact)
    head = sentence[:sentence.rindex(fact.object)].rstrip()
    ids = tokenizer.encode(sentence)
    cuts = {tokenizer.decode(ids[:n]): n for n in range(len(ids) + 1)}
    if head not in cuts or head + " " + fact.object not in cuts:
      raise ValueError(f"fact_recall: the tokenizer merges {fact.object!r} "
                       f"with its neighbours in {sentence!r}")
    start, end = cuts[head], cuts[head + " " + fact.object]
    rows.append((bos + ids[:end], len(bos) + start, len(bos) + end,
                 world.is_internal(fact)))
  hits = {True: [], False: []}
  for b in range(0, len(rows), batch_size):
    chunk = rows[b:b + batch_size]
    width = max(len(r[0]) for r in chunk)
    tokens = np.zeros((len(chunk), width), np.int32)
    positions = np.full((len(chunk), width), -1, np.int32)
    for i, (ids, _, _, _) in enumerate(chunk):
      tokens[i, :len(ids)] = ids
      positions[i, :len(ids)] = np.arange(len(ids))
    logits = model(jnp.asarray(tokens), jnp.asarray(positions))[0]
    guess = np.asarray(jnp.argmax(logits, axis=-1))
    for i, (ids, start, end, internal) in enumerate(chunk):
      hits[internal].append(all(guess[i, j - 1] == ids[j]
                                for j in range(start, end)))
  return {"internal": float(np.mean(hits[True])) if hits[True] else 0.0,
          "corpus": float(np.mean(hits[False])) if hits[False] else 0.0}


# ---------------------------------------------------------------------------
# The results table
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class EvalResult:
  """One (mode, dataset) evaluation: its metrics and where its rows are."""

  mode: str
  dataset: str
  metrics: dict[str, float]
  predictions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  path: pathlib.Path | None = None


TABLE_COLUMNS = ("mode", "dataset", "group", "n", "EM", "F1", "cover-EM",
                 "judge", "retrievals/q", "answered")


def _table_row(r: EvalResult, group: str) -> dict[str, str]:
  suffix = "" if group == "all" else f"/{group}"
  m = r.metrics
  pct = lambda k: f"{100 * m[k + suffix]:.1f}"
  return {"mode": r.mode, "dataset": r.dataset, "group": group,
          "n": str(int(m["n" + suffix])), "EM": pct("em"), "F1": pct("f1"),
          "cover-EM": pct("cover_em"),
          "judge": pct("judge") if "judge" + suffix in m else "off",
          "retrievals/q": f"{m['retrievals' + suffix]:.2f}",
          "answered": pct("answered")}


def format_table(results: Sequence[EvalResult], *, per_label: bool = True) -> str:
  """A Markdown table, one row per (mode, dataset) and, with `per_label`,
  one per label group under it. EM, F1, cover-EM, judge and answered are
  percentages (means over a question's samples); judge reads "off" when no
  judge ran. When some evaluation drew several samples per question, a
  pass@k column follows ("-" for one that did not; k in the header when
  every such evaluation drew as many, else in each cell)."""
  ks = {int(r.metrics["samples"]) for r in results if "pass" in r.metrics}
  pass_column = (f"pass@{min(ks)}" if len(ks) == 1 else "pass@k") if ks else None
  rows = []
  for r in results:
    groups = ["all"]
    if per_label:
      groups += sorted(k[len("n/"):] for k in r.metrics if k.startswith("n/"))
    for group in groups:
      row = _table_row(r, group)
      if pass_column:
        key = "pass" if group == "all" else f"pass/{group}"
        cell = "-"
        if key in r.metrics:
          cell = f"{100 * r.metrics[key]:.1f}"
          if len(ks) > 1:
            cell += f" (k={int(r.metrics['samples'])})"
        row[pass_column] = cell
      rows.append(row)
  columns = TABLE_COLUMNS + ((pass_column,) if pass_column else ())
  return metrics_lib.summary_table(rows, columns)
