"""Evaluation of a policy on question sets: EM, F1, cover-EM, retrievals.

Main entry points:
  evaluate(sampler, tokenizer, questions, prompt_fn, reward_tags, ...)
      -> (metrics, predictions): greedy rollouts with retrieval in the loop;
      metrics overall and per label (e.g. internal / corpus-only, hops);
      predictions in the fields of R1-Searcher's published outputs
      (question, answer, pred_ans, stop_reason_final, gen_text_store).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from rsearch_jax import rewards as rewards_lib


def _labels(q) -> dict[str, str]:
  """Groups a question belongs to, from its optional labels."""
  out = {}
  internal = getattr(q, "internal", None)
  if internal is not None:
    out["knowledge"] = "internal" if internal else "corpus"
  hops = getattr(q, "hops", None)
  if hops is not None:
    out["hops"] = f"{hops}hop"
  return out


def evaluate(sampler, tokenizer, questions: Sequence[Any],
             prompt_fn: Callable[[str], str], reward_tags, *,
             batch_size: int = 16, seed: int = 0
             ) -> tuple[dict[str, float], list[dict[str, Any]]]:
  """Rolls out every question once and scores the answers.

  Args:
    sampler: a Sampler (its temperature decides greedy or not).
    tokenizer: the policy's tokenizer.
    questions: objects with `.question` and `.answers` (and optionally
      `.internal`, `.hops` labels used to split the metrics).
    prompt_fn: question text -> prompt.
    reward_tags: the method's TagSet for parsing traces.
    batch_size: rollouts per sampler call (the last batch is padded by
      repeating its first question, and the repeats are dropped).

  Returns:
    metrics: em, f1, cover_em, retrievals, answered (fraction with an answer
      span), each also per label as "<metric>/<label>".
    predictions: one dict per question.
  """
  rows: list[dict[str, Any]] = []
  for start in range(0, len(questions), batch_size):
    chunk = list(questions[start:start + batch_size])
    texts = [prompt_fn(q.question) for q in chunk]
    texts += [texts[0]] * (batch_size - len(texts))
    out = sampler(texts, seed=seed + start)
    for i, q in enumerate(chunk):
      segs = out.segments(i, tokenizer)
      trace = rewards_lib.parse_trace(segs, reward_tags)
      pred = trace.answer or ""
      gold = list(q.answers)
      rows.append(dict(
          question=q.question, answer=gold, pred_ans=pred,
          stop_reason_final=out.stop_reasons[i],
          gen_text_store="".join(t for t, _ in segs),
          em=float(rewards_lib.exact_match(pred, gold)),
          f1=float(rewards_lib.f1(pred, gold)),
          cover_em=float(rewards_lib.cover_exact_match(pred, gold)),
          retrievals=int(out.num_searches[i]),
          answered=float(trace.answer is not None),
          labels=_labels(q)))
  metrics = _aggregate(rows)
  return metrics, rows


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
  keys = ("em", "f1", "cover_em", "retrievals", "answered")
  out = {k: float(np.mean([r[k] for r in rows])) if rows else 0.0 for k in keys}
  out["n"] = float(len(rows))
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    for value in r["labels"].values():
      groups.setdefault(value, []).append(r)
  for label, members in sorted(groups.items()):
    for k in keys:
      out[f"{k}/{label}"] = float(np.mean([r[k] for r in members]))
    out[f"n/{label}"] = float(len(members))
  return out
