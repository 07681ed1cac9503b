"""R1-Searcher++'s external-knowledge memorization.

For rollouts that answered correctly *with* retrieval, the retrieved facts
they used are rewritten as the policy's own `<internal>` reasoning, and the
policy is trained on the rewritten trajectory with an NLL loss (weight `mu`)
alongside the RL objective, so that what it looked up becomes what it knows.

Main entry points:
  rewrite_rule_based(segments, tags)   query + documents -> <internal> fact:
                                       the document sentence that shares the
                                       most words with the query (exact for
                                       the synthetic world, whose documents
                                       state one fact per sentence).
  PolicyRewriter(generate)             the policy itself, prompted to restate
                                       the documents as a fact it knows.
  memorization_examples(...)           picks the correct, retrieving rollouts
                                       and returns (prompt, completion) texts.

A rewriter returns None when there is nothing to memorize faithfully: no
retrieval, a block that follows no query of the policy's own text (first in
the completion, or right after another block), or no fact for a block.
"""

from __future__ import annotations

import dataclasses
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
  """The block's complete sentences: a title line, or a document cut short
  by its token budget, ends without punctuation and states no fact."""
  body = block.replace(tags.docs_begin, " ").replace(tags.docs_end, " ")
  body = re.sub(r"\(\d+\)", "\n", body)  # the "(1)", "(2)" document labels
  sentences = (s.strip() for s in _SENT.split(body))
  return [s for s in sentences if len(s) > 1 and s.endswith((".", "!", "?"))]


def relevant_sentences(query: str, block: str, tags: MethodTags,
                       max_sentences: int = 1) -> list[str]:
  """The block's sentences sharing the most content words with the query,
  best first (ties in block order)."""
  want = _content_words(query)
  scored = []
  for i, s in enumerate(_doc_sentences(block, tags)):
    overlap = len(want & _content_words(s))
    if overlap:
      scored.append((-overlap, i, s))
  return [s for _, _, s in sorted(scored)[:max_sentences]]


@dataclasses.dataclass(frozen=True)
class _Retrieval:
  """One retrieved block and the query it answers.

  Attributes:
    text: index (among the policy's texts) of the text ending with the query.
    cut: where the query's opening tag starts in that text.
    query: the query, without its tags.
    block: the retrieved block, verbatim.
  """

  text: int
  cut: int
  query: str
  block: str


def _retrievals(segments: Segments, tags: MethodTags
                ) -> tuple[list[str], list[_Retrieval]] | None:
  """The policy's texts and each block's query (the last query of the text
  right before the block); None when a block does not follow such a query."""
  texts: list[str] = []
  found: list[_Retrieval] = []
  after_text = False
  for text, retrieved in segments:
    if not retrieved:
      texts.append(text)
      after_text = True
      continue
    cut = texts[-1].rfind(tags.query_begin) if after_text else -1
    if cut < 0:
      return None
    query = texts[-1][cut + len(tags.query_begin):].replace(tags.query_end, "")
    found.append(_Retrieval(len(texts) - 1, cut, query.strip(), text))
    after_text = False
  return texts, found


def _recall(texts: list[str], found: Sequence[_Retrieval], facts: Sequence[str],
            internal: tuple[str, str]) -> str:
  """The policy's texts with each query (and so its block) replaced by its
  fact in internal tags."""
  texts = list(texts)
  for r, fact in zip(found, facts, strict=True):
    texts[r.text] = texts[r.text][:r.cut] + internal[0] + fact + internal[1]
  return "".join(texts)


def rewrite_rule_based(segments: Segments, tags: MethodTags,
                       internal: tuple[str, str] = ("<internal>", "</internal>"),
                       max_sentences: int = 1) -> str | None:
  """The completion with each `query + retrieved block` replaced by
  `<internal> the block's sentence most related to the query </internal>`
  (up to `max_sentences` of them); None when there is nothing to memorize
  faithfully (no retrieval, a block without its own query, or a block with
  no sentence related to its query)."""
  parsed = _retrievals(segments, tags)
  if parsed is None or not parsed[1]:
    return None
  texts, found = parsed
  facts = []
  for r in found:
    sentences = relevant_sentences(r.query, r.block, tags, max_sentences)
    if not sentences:
      return None
    facts.append(" ".join(sentences))
  return _recall(texts, found, facts, internal)


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
    """The completion with each `query + retrieved block` replaced by the
    first line of the policy's answer to `PROMPT` (one call for all of them),
    in internal tags; None when there is nothing to memorize faithfully (no
    retrieval, a block without its own query, or a blank answer)."""
    parsed = _retrievals(segments, tags)
    if parsed is None or not parsed[1]:
      return None
    texts, found = parsed
    facts = self.generate([self.PROMPT.format(query=r.query, docs=r.block)
                           for r in found])
    if len(facts) != len(found):
      raise ValueError(f"PolicyRewriter: generate returned {len(facts)} "
                       f"completions for {len(found)} prompts")
    facts = [fact.strip().split("\n")[0] for fact in facts]
    if not all(facts):
      return None
    return _recall(texts, found, facts, self.internal)


def memorization_examples(prompts: Sequence[str], segments: Sequence[Segments],
                          correct: Sequence[bool], num_retrievals: Sequence[int],
                          rewrite: Callable[[Segments], str | None]
                          ) -> list[tuple[str, str]]:
  """(prompt, rewritten completion) for every correct rollout that retrieved
  and that `rewrite` could rewrite (it returns None otherwise)."""
  out = []
  for prompt, segs, ok, n in zip(prompts, segments, correct, num_retrievals):
    if ok and n > 0:
      text = rewrite(segs)
      if text:
        out.append((prompt, text))
  return out
