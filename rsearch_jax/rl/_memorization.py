"""R1-Searcher++'s external-knowledge memorization.

For rollouts that answered correctly *with* retrieval, the retrieved facts
they used are rewritten as the policy's own `<internal>` reasoning, and the
policy is trained on the rewritten trajectory with an NLL loss (weight `mu`)
alongside the RL objective, so that what it looked up becomes what it knows.

Main entry points:
  rewrite_rule_based(segments, tags)   query + documents -> <internal> facts:
                                       the document sentences that share words
                                       with the query (exact for the synthetic
                                       world, whose documents state one fact
                                       per sentence).
  PolicyRewriter(sampler, ...)         the policy itself, prompted to restate
                                       the documents as a fact it knows.
  memorization_examples(...)           picks the correct, retrieving rollouts
                                       and returns (prompt, completion) texts.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from rsearch_jax.prompts import MethodTags

Segments = Sequence[tuple[str, bool]]
_WORD = re.compile(r"[A-Za-z0-9]+")
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = frozenset(
    "a an the of in on at to for by with and or is was were who what which "
    "where when whom whose how did does do born".split())


def _content_words(text: str) -> set[str]:
  return {w.lower() for w in _WORD.findall(text)} - _STOP


def _doc_sentences(block: str, tags: MethodTags) -> list[str]:
  body = block.replace(tags.docs_begin, " ").replace(tags.docs_end, " ")
  body = re.sub(r"\(\d+\)", "\n", body)  # the "(1)", "(2)" document labels
  return [s.strip() for s in _SENT.split(body) if len(s.strip()) > 1]


def relevant_sentences(query: str, block: str, tags: MethodTags,
                       max_sentences: int = 2) -> list[str]:
  """The block's sentences sharing the most content words with the query."""
  want = _content_words(query)
  scored = []
  for i, s in enumerate(_doc_sentences(block, tags)):
    overlap = len(want & _content_words(s))
    if overlap:
      scored.append((-overlap, i, s))
  return [s for _, _, s in sorted(scored)[:max_sentences]]


def rewrite_rule_based(segments: Segments, tags: MethodTags,
                       internal: tuple[str, str] = ("<internal>", "</internal>"),
                       max_sentences: int = 2) -> str | None:
  """The completion with each `query + retrieved block` replaced by
  `<internal> relevant document sentences </internal>`; None if a block has
  no sentence related to its query (nothing to memorize faithfully)."""
  out: list[str] = []
  for j, (text, retrieved) in enumerate(segments):
    if not retrieved:
      out.append(text)
      continue
    prev = out.pop() if out else ""
    cut = prev.rfind(tags.query_begin)
    if cut < 0:
      return None
    query = prev[cut + len(tags.query_begin):].replace(tags.query_end, "")
    facts = relevant_sentences(query, text, tags, max_sentences)
    if not facts:
      return None
    out.append(prev[:cut] + internal[0] + " ".join(facts) + internal[1])
  return "".join(out)


class PolicyRewriter:
  """Rewrites with the policy: each (query, documents) pair is turned into a
  prompt asking for the relevant fact in one sentence, sampled greedily.

  Args:
    generate: texts -> completions (e.g. a no-retrieval Sampler's texts).
  """

  PROMPT = ("Restate, as one short sentence you know to be true, the fact in "
            "these search results that answers the query.\nQuery: {query}\n"
            "Results: {docs}\nFact:")

  def __init__(self, generate: Callable[[list[str]], list[str]],
               internal: tuple[str, str] = ("<internal>", "</internal>")):
    self.generate = generate
    self.internal = internal

  def __call__(self, segments: Segments, tags: MethodTags) -> str | None:
    pairs, out = [], []
    for text, retrieved in segments:
      if retrieved:
        prev = out[-1] if out else ""
        cut = prev.rfind(tags.query_begin)
        if cut < 0:
          return None
        pairs.append((len(out) - 1, cut, prev[cut + len(tags.query_begin):]
                      .replace(tags.query_end, "").strip(), text))
        out.append(None)  # placeholder for the block
      else:
        out.append(text)
    if not pairs:
      return None
    facts = self.generate([self.PROMPT.format(query=q, docs=d)
                           for _, _, q, d in pairs])
    for (i, cut, _, _), fact in zip(pairs, facts):
      fact = fact.strip().split("\n")[0]
      if not fact:
        return None
      out[i] = out[i][:cut] + self.internal[0] + fact + self.internal[1]
    return "".join(t for t in out if t is not None)


def memorization_examples(prompts: Sequence[str], segments: Sequence[Segments],
                          correct: Sequence[bool], num_retrievals: Sequence[int],
                          rewrite: Callable[[Segments], str | None]
                          ) -> list[tuple[str, str]]:
  """(prompt, rewritten completion) for every correct rollout that retrieved."""
  out = []
  for prompt, segs, ok, n in zip(prompts, segments, correct, num_retrievals):
    if ok and n > 0:
      text = rewrite(segs)
      if text:
        out.append((prompt, text))
  return out
