"""Rewards and answer metrics: pure Python on the decoded text of rollouts.

Answer metrics follow R1-Searcher's evaluation code (HotpotQA's metrics with
R1-Searcher's normalisation: punctuation becomes a space, `_` a space, the
strings "True"/"False" mean yes/no). Every metric takes one gold string or a
list of gold aliases and returns the best score over the aliases.

Main entry points:
  normalize_answer(s)                  the normalisation every metric uses.
  exact_match / f1 / cover_exact_match(pred, gold)   EM, HotpotQA F1 (with its
                                       yes/no/noanswer rule), cover-EM (every
                                       gold token appears in the prediction;
                                       R1-Searcher's ACC_R).
  TagSet, R1_TAGS, R1PP_TAGS           the tags a method writes.
  parse_trace(completion, tags) -> Trace   tolerant parser: text mode (a
                                       string) or segment mode (the sampler's
                                       `(text, retrieved)` runs).
  REWARDS, get_reward(name, **params)  the named, configurable rewards.
  score_group(completions, gold, tags, rewards) -> (total, parts)   one
                                       prompt's group, each completion parsed once.
  is_correct(trace, gold), accuracy(traces, golds)   metrics for logging.

Rewards per method (names in REWARDS; a config lists them per stage):
  R1-Searcher stage 1   ("retrieval", "format"): +0.5 for at least one
                        retrieval with consistent query/document tags, +0.5 for
                        the think/answer format (R1-Searcher's reward server).
  R1-Searcher stage 2   ("f1", "format_penalty"): F1 of the answer, -2 when the
                        format is wrong (0 when right).
  R1-Searcher++         ("format_penalty", "answer_cem", "group_fewest_retrievals"):
                        format 0/-2, answer 1 when cover-EM holds and the answer
                        has at most 10 words, and the group reward for the
                        correct rollouts with the fewest retrievals.
  Search-R1             ("em",): exact match of the answer.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import math
import re
import string
from typing import Any, Callable, Iterable, Sequence

# ---------------------------------------------------------------------------
# Answer normalisation and metrics
# ---------------------------------------------------------------------------

# R1-Searcher adds typographic quotes to string.punctuation; each punctuation
# character becomes a space (HotpotQA deletes it), so "U.S." -> "u s".
_PUNCT = frozenset(string.punctuation + "‘’´`")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES_NO = ("yes", "no", "noanswer")

Gold = str | bool | Sequence[str]


def normalize_answer(s: str) -> str:
  """Lower case, `_` and punctuation to spaces, articles dropped, spaces collapsed."""
  s = s.replace("_", " ").lower()
  s = "".join(" " if ch in _PUNCT else ch for ch in s)
  s = _ARTICLES.sub(" ", s)
  return " ".join(s.split())


def _bool_text(s: Any) -> str:
  """R1-Searcher's mapping of boolean answers ("True"/"False", or JSON bools)."""
  if s is True or s == "True":
    return "yes"
  if s is False or s == "False":
    return "no"
  return "" if s is None else str(s)


def _aliases(gold: Gold) -> list[str]:
  if isinstance(gold, (str, bool)) or gold is None:
    return [_bool_text(gold)]
  return [_bool_text(g) for g in gold]


def _best(metric: Callable[[str, str], float], pred: str | None, gold: Gold) -> float:
  p = _bool_text(pred)
  return max((metric(p, g) for g in _aliases(gold)), default=0.0)


def _em_one(pred: str, gold: str) -> float:
  return float(normalize_answer(pred) == normalize_answer(gold))


def _f1_one(pred: str, gold: str) -> float:
  p, g = normalize_answer(pred), normalize_answer(gold)
  # HotpotQA: a yes/no/noanswer on either side scores only when both agree.
  if (p in _YES_NO or g in _YES_NO) and p != g:
    return 0.0
  p_toks, g_toks = p.split(), g.split()
  same = sum((collections.Counter(p_toks) & collections.Counter(g_toks)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(p_toks), same / len(g_toks)
  return 2 * precision * recall / (precision + recall)


def _cover_one(pred: str, gold: str) -> float:
  g_toks = normalize_answer(gold).split()
  p_toks = set(normalize_answer(pred).split())
  if not g_toks:  # R1-Searcher's split(" ") gives [""]: only an empty prediction covers it
    return float(not p_toks)
  return float(all(t in p_toks for t in g_toks))


def exact_match(pred: str | None, gold: Gold) -> float:
  """1.0 when the normalized prediction equals a normalized gold alias."""
  return _best(_em_one, pred, gold)


def f1(pred: str | None, gold: Gold) -> float:
  """HotpotQA token F1, best over the gold aliases."""
  return _best(_f1_one, pred, gold)


def cover_exact_match(pred: str | None, gold: Gold) -> float:
  """1.0 when every normalized token of a gold alias is a token of the
  normalized prediction (any order, not necessarily contiguous)."""
  return _best(_cover_one, pred, gold)


# ---------------------------------------------------------------------------
# Tag sets
# ---------------------------------------------------------------------------

Pair = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class TagSet:
  """The tags of one method.

  Attributes:
    think: the reasoning span.
    answer: the final answer span.
    query: around a search query the model issues.
    documents: around a block of retrieved documents.
    internal: around recalled knowledge (R1-Searcher++), or None.
    think_in_prompt: the prompt ends with an opened `think` tag (as both
      R1-Searcher's prompts and `prompts.render_prompt` do), so a well-formed
      completion closes it once and never opens it.
  """

  think: Pair
  answer: Pair
  query: Pair
  documents: Pair
  internal: Pair | None = None
  think_in_prompt: bool = True

  def __post_init__(self):
    tags = [t for _, pair in self.pairs() for t in pair]
    for kind, pair in self.pairs():
      if len(pair) != 2 or not all(isinstance(t, str) and t for t in pair):
        raise ValueError(f"TagSet.{kind}={pair!r}: expected two non-empty strings")
    dup = sorted(t for t, n in collections.Counter(tags).items() if n > 1)
    if dup:
      raise ValueError(f"TagSet: tags used twice: {dup}")

  def pairs(self) -> list[tuple[str, Pair]]:
    """(kind, (open, close)) for every tag pair in use."""
    out = [("think", self.think), ("answer", self.answer),
           ("query", self.query), ("documents", self.documents)]
    if self.internal is not None:
      out.append(("internal", self.internal))
    return out


R1_TAGS = TagSet(
    think=("<think>", "</think>"),
    answer=("<answer>", "</answer>"),
    query=("<|begin_of_query|>", "<|end_of_query|>"),
    documents=("<|begin_of_documents|>", "<|end_of_documents|>"))

R1PP_TAGS = TagSet(
    think=("<think>", "</think>"),
    answer=("<answer>", "</answer>"),
    query=("<external>", "</external>"),
    documents=("<document>", "</document>"),
    internal=("<internal>", "</internal>"))

# Each method's tags (`method` of a run config -> its TagSet).
METHOD_TAGSETS = {"r1": R1_TAGS, "r1pp": R1PP_TAGS}


# ---------------------------------------------------------------------------
# Trace parsing
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Trace:
  """What a completion did, as far as the text tells.

  Attributes:
    answer: the text of the last complete answer span (stripped), or None.
    answers: every complete answer span, in order.
    think: the complete think spans (raw text, inner tags included).
    queries: the issued queries (text between closed query tags, stripped).
    documents: the retrieved document blocks (text inside the document tags).
    num_hallucinated_docs: document blocks the model wrote itself.
    internal: the complete internal-knowledge spans (R1-Searcher++).
    problems: format problems, each "<area>: <what>", area one of think,
      answer, query, internal, documents, language.
    text: the whole completion as one string.
  """

  answer: str | None
  answers: tuple[str, ...]
  think: tuple[str, ...]
  queries: tuple[str, ...]
  documents: tuple[str, ...]
  num_hallucinated_docs: int
  internal: tuple[str, ...]
  problems: tuple[str, ...]
  text: str

  @property
  def num_retrievals(self) -> int:
    return len(self.documents)

  @property
  def well_formed(self) -> bool:
    return not self.problems

  def problems_in(self, *areas: str) -> tuple[str, ...]:
    """The problems of the given areas ("think", "query", ...)."""
    return tuple(p for p in self.problems if p.split(":", 1)[0] in areas)


Segments = Sequence[tuple[str, bool]]
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Spans that hold plain text: none of them may open inside another.
_LEAF_KINDS = ("answer", "query", "internal")


@functools.lru_cache(maxsize=32)
def _tag_table(tags: TagSet) -> tuple[re.Pattern, dict[str, tuple[str, bool]]]:
  lookup = {}
  for kind, (open_tag, close_tag) in tags.pairs():
    lookup[open_tag] = (kind, True)
    lookup[close_tag] = (kind, False)
  # Longest first, so a tag that prefixes another never wins.
  alternation = "|".join(re.escape(t) for t in sorted(lookup, key=len, reverse=True))
  return re.compile(alternation), lookup


def _as_segments(completion: str | Segments) -> tuple[list[tuple[str, bool]], bool]:
  """(segments with adjacent model runs merged, segment_mode)."""
  if isinstance(completion, str):
    return [(completion, False)], False
  out: list[tuple[str, bool]] = []
  for i, seg in enumerate(completion):
    if (not isinstance(seg, (tuple, list)) or len(seg) != 2
        or not isinstance(seg[0], str)):
      raise TypeError(f"completion segment {i}: expected (text: str, retrieved: bool), "
                      f"got {seg!r:.80}")
    text, retrieved = seg[0], bool(seg[1])
    if out and not retrieved and not out[-1][1]:
      out[-1] = (out[-1][0] + text, False)
    else:
      out.append((text, retrieved))
  return out, True


class _Parser:
  """One pass over a completion; see `parse_trace`."""

  def __init__(self, tags: TagSet, segment_mode: bool):
    self.tags = tags
    self.segment_mode = segment_mode
    self.rx, self.lookup = _tag_table(tags)
    self.kinds = [k for k, _ in tags.pairs() if k != "documents"]
    self.open_at: dict[str, int | None] = {k: None for k in self.kinds}
    self.spans: dict[str, list[str]] = {k: [] for k in self.kinds}
    self.opens = collections.Counter()
    self.closes = collections.Counter()
    self.problems: list[str] = []
    self.documents: list[str] = []
    self.hallucinated = 0
    self.awaiting_docs = False  # a query just closed, nothing written since
    self.cjk = False
    self.text = ""
    if tags.think_in_prompt:
      self.open_at["think"] = 0

  def problem(self, msg: str) -> None:
    if msg not in self.problems:
      self.problems.append(msg)

  def feed_model(self, s: str) -> None:
    base, pos = len(self.text), 0
    self.text += s
    docs_close = self.tags.documents[1]
    while pos <= len(s):
      m = self.rx.search(s, pos)
      stop = m.start() if m else len(s)
      self._plain(s[pos:stop])
      if m is None:
        return
      kind, is_open = self.lookup[m.group()]
      if kind == "documents":
        if not is_open:
          self.problem(f"documents: stray {docs_close}")
          pos = m.end()
          continue
        end = s.find(docs_close, m.end())
        if end < 0:
          self.problem("documents: block never closed")
          body, pos = s[m.end():], len(s) + 1
        else:
          body, pos = s[m.end():end], end + len(docs_close)
        # Text mode cannot see who wrote a block: one right after a closed
        # query is taken as the retriever's; segment mode knows it is not.
        self._documents(body, retrieved=not self.segment_mode and self.awaiting_docs)
        continue
      self._tag(kind, is_open, base + m.start(), base + m.end())
      pos = m.end()

  def feed_retrieved(self, s: str) -> None:
    self.text += s
    body = s.strip()
    open_tag, close_tag = self.tags.documents
    if body.startswith(open_tag):
      body = body[len(open_tag):]
    if body.endswith(close_tag):
      body = body[:-len(close_tag)]
    self._documents(body, retrieved=True)

  def _plain(self, s: str) -> None:
    if s.strip():
      self.awaiting_docs = False
    if not self.cjk and _CJK.search(s):
      self.cjk = True

  def _documents(self, body: str, retrieved: bool) -> None:
    self.awaiting_docs = False
    if retrieved:
      self.documents.append(body.strip())
    else:
      self.hallucinated += 1

  def _tag(self, kind: str, is_open: bool, start: int, end: int) -> None:
    self.awaiting_docs = False
    open_tag, close_tag = dict(self.tags.pairs())[kind]
    if is_open:
      self.opens[kind] += 1
      if kind == "think" and self.tags.think_in_prompt:
        self.problem(f"think: {open_tag} in the completion (the prompt opened it)")
      if self.open_at[kind] is not None:
        self.problem(f"{kind}: {open_tag} again before {close_tag}")
      if kind in _LEAF_KINDS:
        for other in _LEAF_KINDS:
          if other != kind and self.open_at.get(other) is not None:
            self.problem(f"{kind}: opened inside {other}")
      if kind == "answer" and self.open_at["think"] is not None:
        self.problem(f"answer: opened before {self.tags.think[1]}")
      self.open_at[kind] = end  # a repeated open restarts the span
      return
    self.closes[kind] += 1
    begin = self.open_at[kind]
    if begin is None:
      self.problem(f"{kind}: stray {close_tag}")
      return
    self.spans[kind].append(self.text[begin:start])
    self.open_at[kind] = None
    if kind == "query":
      self.awaiting_docs = True

  def finish(self) -> Trace:
    t = self.tags
    for kind in self.kinds:
      if self.open_at[kind] is not None:
        self.problem(f"{kind}: never closed")
    if not t.think_in_prompt and self.opens["think"] == 0:
      self.problem(f"think: missing {t.think[0]}")
    if self.closes["think"] == 0 and self.open_at["think"] is None:
      self.problem(f"think: missing {t.think[1]}")
    elif self.closes["think"] > 1:
      self.problem(f"think: {t.think[1]} {self.closes['think']} times")
    answers = [a.strip() for a in self.spans["answer"]]
    if not answers:
      self.problem("answer: no complete answer")
    elif len(answers) > 1:
      self.problem(f"answer: {len(answers)} answers")
    queries = [q.strip() for q in self.spans["query"]]
    if len(queries) != len(self.documents):
      self.problem(f"query: {len(queries)} queries but {len(self.documents)} "
                   "retrieved document blocks")
    if self.hallucinated:
      self.problem(f"documents: {self.hallucinated} block(s) written by the model")
    if self.cjk:
      self.problem("language: CJK characters outside documents")
    return Trace(
        answer=answers[-1] if answers else None,
        answers=tuple(answers),
        think=tuple(self.spans["think"]),
        queries=tuple(queries),
        documents=tuple(self.documents),
        num_hallucinated_docs=self.hallucinated,
        internal=tuple(s.strip() for s in self.spans.get("internal", [])),
        problems=tuple(self.problems),
        text=self.text)


def parse_trace(completion: str | Segments, tags: TagSet) -> Trace:
  """Parses one completion (the text after the prompt); never raises on text.

  Args:
    completion: a string (text mode: document blocks are found by their
      tags, and a block right after a closed query counts as retrieved), or
      the sampler's `(text, retrieved)` segments (segment mode: only the
      segments with retrieved=True are retrieved documents; a document block
      inside the model's own text is always hallucinated).
    tags: the method's TagSet.

  A well-formed completion (no problems) closes the think span once (opening
  it only when the prompt did not), then gives exactly one answer span; every
  query is closed and answered by one retrieved block; spans are not nested
  in each other (queries, internal spans and the answer are leaves; think
  may hold them); there are no self-written document blocks, and no CJK text
  outside documents (R1-Searcher's stage-2 check).
  """
  segments, segment_mode = _as_segments(completion)
  p = _Parser(tags, segment_mode)
  for text, retrieved in segments:
    if retrieved:
      p.feed_retrieved(text)
    else:
      p.feed_model(text)
  return p.finish()


# ---------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------


def retrieval_reward(trace: Trace, gold: Gold, *, value: float = 0.5,
                     min_retrievals: int = 1) -> float:
  """R1-Searcher stage 1: `value` when the rollout retrieved at least
  `min_retrievals` times and its query/document tags are consistent (every
  query closed and answered by one retrieved block, none self-written)."""
  del gold
  ok = (trace.num_retrievals >= min_retrievals
        and not trace.problems_in("query", "documents"))
  return value if ok else 0.0


def format_reward(trace: Trace, gold: Gold, *, value: float = 0.5) -> float:
  """R1-Searcher stage 1: `value` when the think/answer format is right (the
  reward server's check: no extra `<think>`, one `</think>`, one answer)."""
  del gold
  return 0.0 if trace.problems_in("think", "answer") else value


def format_penalty(trace: Trace, gold: Gold, *, penalty: float = 2.0) -> float:
  """R1-Searcher stage 2 and R1-Searcher++: 0 when well formed, else -penalty."""
  del gold
  return 0.0 if trace.well_formed else -float(penalty)


def f1_reward(trace: Trace, gold: Gold) -> float:
  """F1 of the answer (0 without an answer): R1-Searcher stage 2."""
  return 0.0 if trace.answer is None else f1(trace.answer, gold)


def em_reward(trace: Trace, gold: Gold) -> float:
  """Exact match of the answer: Search-R1."""
  return 0.0 if trace.answer is None else exact_match(trace.answer, gold)


def cover_em_reward(trace: Trace, gold: Gold) -> float:
  """Cover exact match of the answer."""
  return 0.0 if trace.answer is None else cover_exact_match(trace.answer, gold)


def answer_cem_reward(trace: Trace, gold: Gold, *, max_words: int = 10) -> float:
  """R1-Searcher++ answer reward: cover-EM, but 0 for answers longer than
  `max_words` words (a long answer could cover the gold by listing guesses)."""
  if trace.answer is None or len(trace.answer.split()) > max_words:
    return 0.0
  return cover_exact_match(trace.answer, gold)


def group_fewest_retrievals(traces: Sequence[Trace], gold: Gold, *,
                            scale: float = 2.0, cap: float = 2.0,
                            max_words: int = 10) -> list[float]:
  """R1-Searcher++ group reward for one prompt's rollouts.

  Among the correct rollouts (answer reward 1), those with the fewest
  retrievals get min(scale * sigma**2, cap), sigma the (population) standard
  deviation of the correct rollouts' retrieval counts; every other rollout
  gets 0. When all correct rollouts retrieved equally often, sigma = 0 and
  nobody is singled out.
  """
  correct = [answer_cem_reward(t, gold, max_words=max_words) == 1.0 for t in traces]
  counts = [t.num_retrievals for t, c in zip(traces, correct) if c]
  if not counts:
    return [0.0] * len(traces)
  mean = sum(counts) / len(counts)
  var = sum((n - mean) ** 2 for n in counts) / len(counts)
  bonus = min(scale * var, cap)
  fewest = min(counts)
  return [bonus if c and t.num_retrievals == fewest else 0.0
          for t, c in zip(traces, correct)]


@dataclasses.dataclass(frozen=True)
class Reward:
  """A reward function with its parameters bound.

  Attributes:
    name: the registry name (and the key of its part in `score_group`).
    fn: per rollout `fn(trace, gold, **params) -> float`, or for a group
      reward `fn(traces, gold, **params) -> list[float]`.
    group: whether fn scores a whole group.
    params: keyword parameters, as sorted (name, value) pairs.
  """

  name: str
  fn: Callable[..., Any]
  group: bool = False
  params: tuple[tuple[str, Any], ...] = ()

  def score(self, traces: Sequence[Trace], gold: Gold) -> list[float]:
    """One float per trace."""
    kw = dict(self.params)
    if self.group:
      out = [float(r) for r in self.fn(list(traces), gold, **kw)]
      if len(out) != len(traces):
        raise ValueError(f"reward {self.name!r}: {len(out)} values for "
                         f"{len(traces)} rollouts")
    else:
      out = [float(self.fn(t, gold, **kw)) for t in traces]
    bad = [r for r in out if not math.isfinite(r)]
    if bad:
      raise ValueError(f"reward {self.name!r} returned a non-finite value {bad[0]}")
    return out


REWARDS: dict[str, Reward] = {r.name: r for r in (
    Reward("retrieval", retrieval_reward),
    Reward("format", format_reward),
    Reward("format_penalty", format_penalty),
    Reward("f1", f1_reward),
    Reward("em", em_reward),
    Reward("cover_em", cover_em_reward),
    Reward("answer_cem", answer_cem_reward),
    Reward("group_fewest_retrievals", group_fewest_retrievals, group=True),
)}


def _param_value(text: str) -> Any:
  low = text.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def get_reward(name: str, **params: Any) -> Reward:
  """The reward `name` with `params` bound (unknown names or parameters raise).

  `name` may carry parameters itself, as in a config string:
  "format_penalty:penalty=1" or "group_fewest_retrievals:scale=1:cap=0.5".
  """
  base, *assigns = name.strip().split(":")
  if base not in REWARDS:
    raise ValueError(f"unknown reward {base!r}; known rewards: {', '.join(REWARDS)}")
  for a in assigns:
    key, sep, value = a.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"reward {name!r}: expected 'key=value' after ':', got {a!r}")
    params.setdefault(key.strip(), _param_value(value))
  reward = REWARDS[base]
  known = [p.name for p in inspect.signature(reward.fn).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY]
  unknown = sorted(set(params) - set(known))
  if unknown:
    raise ValueError(f"reward {base!r}: unknown parameter(s) {unknown}; "
                     f"it takes {known or 'none'}")
  return dataclasses.replace(reward, params=tuple(sorted(params.items())))


RewardSpec = str | Reward | Callable[[Trace, Gold], float]


def _resolve(spec: RewardSpec) -> Reward:
  if isinstance(spec, Reward):
    return spec
  if isinstance(spec, str):
    return get_reward(spec)
  if callable(spec):
    return Reward(getattr(spec, "__name__", repr(spec)), spec)
  raise TypeError(f"reward {spec!r}: expected a name, a Reward or a function")


def score_group(completions: Sequence[str | Segments], gold: Gold, tags: TagSet,
                rewards: Iterable[RewardSpec]
                ) -> tuple[list[float], dict[str, list[float]]]:
  """Scores one prompt's rollouts.

  Args:
    completions: the group's completions (strings or sampler segments).
    gold: the prompt's gold answer or aliases.
    tags: the method's TagSet.
    rewards: names (see REWARDS; "name:key=value" binds parameters), Reward
      objects, or plain per-rollout functions `fn(trace, gold) -> float`.

  Returns:
    total: the sum of the parts, one float per completion.
    parts: reward name -> one float per completion.
  """
  traces = [parse_trace(c, tags) for c in completions]
  parts: dict[str, list[float]] = {}
  for spec in rewards:
    reward = _resolve(spec)
    if reward.name in parts:
      raise ValueError(f"reward {reward.name!r} listed twice")
    parts[reward.name] = reward.score(traces, gold)
  total = [float(sum(vals)) for vals in zip(*parts.values())] if parts else \
      [0.0] * len(traces)
  return total, parts


def is_correct(trace: Trace, gold: Gold, metric: str = "cover_em") -> bool:
  """Whether the answer is right by "cover_em" (R1-Searcher's ACC_R) or "em";
  a trace without an answer is never right."""
  if trace.answer is None:
    return False
  fns = {"cover_em": cover_exact_match, "em": exact_match}
  if metric not in fns:
    raise ValueError(f"metric={metric!r}: expected one of {sorted(fns)}")
  return fns[metric](trace.answer, gold) == 1.0


def accuracy(traces: Sequence[Trace], golds: Sequence[Gold],
             metric: str = "cover_em") -> float:
  """Fraction of traces whose answer is correct (0.0 for no traces)."""
  if len(traces) != len(golds):
    raise ValueError(f"accuracy: {len(traces)} traces but {len(golds)} golds")
  if not traces:
    return 0.0
  return sum(is_correct(t, g, metric) for t, g in zip(traces, golds)) / len(traces)
