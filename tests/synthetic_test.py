"""Tests of the synthetic world, its corpus, questions, splits and scripted agent.

The facts are checked along paths independent of the generator's fact table:
gold answers are re-derived by parsing the corpus documents and the question
texts with regular expressions written here, the internal labels from what the
pretraining text actually states, and retrieval with the project's BM25.
"""

from __future__ import annotations

import collections
import json
import re
import time

import pytest
import Stemmer

from rsearch_jax import rewards
from rsearch_jax.data import _qa
from rsearch_jax.data import synthetic as S
from rsearch_jax.prompts import METHOD_TAGS
from rsearch_jax.retrieval import BM25Retriever


@pytest.fixture(scope="module")
def world():
  return S.make_world(S.WorldConfig(seed=3))


@pytest.fixture(scope="module")
def splits(world):
  return S.make_splits(world, seed=1)


@pytest.fixture(scope="module")
def retriever(world):
  return BM25Retriever(world.corpus())


def _names(world):
  return list(world.people) + list(world.films) + list(world.companies) + list(
      world.cities)


def _sentences(text):
  return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


# -- reading the corpus (independent of the generator's table) -----------------


class DocFacts:
  """Relations read back from the corpus documents' sentences."""

  def __init__(self, docs):
    self.rel = collections.defaultdict(set)  # (subject, relation) -> objects
    self.pairs = set()                       # frozenset({a, b}) of each fact
    self.kind = {}
    patterns = [
        (r"(.+) was born in the city of (.+)", "born"),
        (r"(.+) was born in the year (\d{4})", "byear"),
        (r"(.+) is married to (.+)", "spouse"),
        (r"(.+) directed the film (.+)", "directed_film"),
        (r"(.+) was directed by (.+)", "director"),
        (r"(.+) was released in the year (\d{4})", "released"),
        (r"(.+) founded the company (.+)", "founded_company"),
        (r"(.+) was founded by (.+)", "founder"),
        (r"(.+) is headquartered in the city of (.+)", "hq"),
        (r"(.+) is headquartered in (.+)", "hq"),
        (r"(.+) (?:was|were) born in (.+)", "natives"),
    ]
    for d in docs:
      for sent in _sentences(d.text):
        assert sent.endswith("."), sent
        body = sent[:-1]
        if m := re.fullmatch(r"(.+) is a city", body):
          self.kind[m.group(1)] = "city"
          continue
        for pat, rel in patterns:
          m = re.fullmatch(pat, body)
          if m:
            break
        else:
          raise AssertionError(f"unparsed corpus sentence: {sent!r}")
        a, b = m.group(1), m.group(2)
        if rel == "natives":
          for p in re.split(r", | and ", a):
            self._add(p, "born", b)
        elif rel == "directed_film":
          self._add(b, "director", a)
        elif rel == "founded_company":
          self._add(b, "founder", a)
        else:
          self._add(a, rel, b)
    for (s, r), objs in list(self.rel.items()):
      if r == "spouse":
        for o in objs:
          self.rel[(o, "spouse")].add(s)
      if r == "founder":
        for o in objs:
          self.rel[(o, "company")].add(s)

  def _add(self, s, r, o):
    self.rel[(s, r)].add(o)
    self.pairs.add(frozenset((s, o)))

  def one(self, subject, relation):
    """The unique object, asserting there is exactly one."""
    objs = self.rel.get((subject, relation), set())
    assert len(objs) == 1, (subject, relation, objs)
    return next(iter(objs))


# Question texts -> (chain of relations | comparison) from the phrasing alone.
_X = r"(?:the (?:film|company) )?(?P<x>.+)"
_QUESTION_PATTERNS = [
    (rf"In which city was the director of {_X} born\?", ("director", "born")),
    (rf"Where was the director of {_X} born\?", ("director", "born")),
    (rf"(?:In what year|When) was the director of {_X} born\?",
     ("director", "byear")),
    (rf"Who is (?:the spouse of|married to) the director of {_X}\?",
     ("director", "spouse")),
    (rf"(?:Where|In which city) was the founder of {_X} born\?",
     ("founder", "born")),
    (rf"(?:In what year|When) was the founder of {_X} born\?",
     ("founder", "byear")),
    (rf"Who is (?:the spouse of|married to) the founder of {_X}\?",
     ("founder", "spouse")),
    (rf"(?:Where|In which city) was the spouse of {_X} born\?",
     ("spouse", "born")),
    (rf"(?:In what year|When) was the spouse of {_X} born\?",
     ("spouse", "byear")),
    (rf"Where is the company founded by {_X} headquartered\?",
     ("company", "hq")),
    (rf"In which city is the company founded by {_X} based\?",
     ("company", "hq")),
    (rf"(?:Where|In which city) was {_X} born\?", ("born",)),
    (rf"(?:In what year|When) was {_X} born\?", ("byear",)),
    (rf"Who is {_X} married to\?", ("spouse",)),
    (rf"Who is the spouse of {_X}\?", ("spouse",)),
    (rf"Who is married to {_X}\?", ("spouse",)),
    (rf"Who (?:directed|was the director of) {_X}\?", ("director",)),
    (rf"(?:In what year|When) was {_X} released\?", ("released",)),
    (rf"Who (?:founded|was the founder of) {_X}\?", ("founder",)),
    (rf"Where is {_X} headquartered\?", ("hq",)),
    (rf"In which city is {_X} based\?", ("hq",)),
]
_COMPARISON = re.compile(
    r"(?:Who was born|Which film (?:was released|came out)) "
    r"(?P<when>first|earlier|later), (?P<a>.+) or (?P<b>.+)\?")


def _resolve(question: str, facts: DocFacts):
  """(answer, pairs of the facts used, entities involved) from the texts."""
  m = _COMPARISON.fullmatch(question)
  if m:
    rel = "byear" if question.startswith("Who") else "released"
    a, b = m.group("a"), m.group("b")
    ya, yb = int(facts.one(a, rel)), int(facts.one(b, rel))
    assert ya != yb, question
    first = a if ya < yb else b
    answer = first if m.group("when") != "later" else (b if first == a else a)
    pairs = [frozenset((a, str(ya))), frozenset((b, str(yb)))]
    return answer, pairs, {a, b}
  for pat, chain in _QUESTION_PATTERNS:
    m = re.fullmatch(pat, question)
    if m:
      break
  else:
    raise AssertionError(f"unparsed question: {question!r}")
  x, pairs, involved = m.group("x"), [], {m.group("x")}
  for rel in chain:
    y = facts.one(x, rel)
    pairs.append(frozenset((x, y)))
    x = y
    involved.add(y)
  return x, pairs, involved


@pytest.fixture(scope="module")
def doc_facts(world):
  return DocFacts(world.corpus())


def _pretraining_pairs(world, texts):
  """Counter of the {a, b} pairs co-occurring in a pretraining sentence;
  every sentence must mention exactly two names or years."""
  names = sorted(_names(world), key=len, reverse=True)
  mention = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r"|\d{4})\b")
  pairs = collections.Counter()
  for text in texts:
    for sent in _sentences(text):
      found = mention.findall(sent)
      assert len(found) == 2, sent
      pairs[frozenset(found)] += 1
  return pairs


def _entity_set(world, involved):
  return {e for e in involved
          if e in set(world.people) | set(world.films) | set(world.companies)}


# -- the world -------------------------------------------------------------------


def test_config_is_validated():
  with pytest.raises(ValueError, match="num_companies"):
    S.WorldConfig(num_people=3, num_companies=4)
  with pytest.raises(ValueError, match="internal_fraction"):
    S.WorldConfig(internal_fraction=1.5)
  with pytest.raises(ValueError, match="num_films"):
    S.WorldConfig(num_people=2, num_films=5, num_companies=0)


def test_deterministic_given_seed():
  cfg = S.WorldConfig(seed=7)
  a, b = S.make_world(cfg), S.make_world(cfg)
  assert a == b
  assert a.corpus() == b.corpus()
  assert a.pretraining_texts() == b.pretraining_texts()
  assert a.questions() == b.questions()
  assert S.make_splits(a, 2) == S.make_splits(b, 2)
  c = S.make_world(S.WorldConfig(seed=8))
  assert set(c.people).isdisjoint(a.people) or c.people != a.people
  assert c.facts != a.facts and c.pretraining_texts() != a.pretraining_texts()
  assert S.make_splits(a, 2) != S.make_splits(a, 3)


def test_sizes_follow_config(world):
  cfg = world.config
  assert (len(world.people), len(world.films), len(world.companies),
          len(world.cities)) == (cfg.num_people, cfg.num_films,
                                 cfg.num_companies, cfg.num_cities)
  small = S.make_world(S.WorldConfig(num_people=6, num_films=3, num_companies=2,
                                     num_cities=2, seed=1))
  assert len(small.corpus()) == 6 + 3 + 2 + 2
  parts = S.make_splits(small, seed=0, entity_fraction=0.3)
  assert parts["train"] and parts["heldout_entities"]


def test_names_unique_pronounceable_and_distinct_under_stemming(world):
  names = _names(world)
  assert len(set(names)) == len(names)
  words = [w for n in names for w in n.split()]
  suffixes = {"Works", "Group", "Labs", "Holdings", "Studios", "Industries"}
  core = [w for w in words if w not in suffixes]
  assert len(set(core)) == len(core)
  for w in core:
    assert re.fullmatch(r"[A-Z][a-z]{3,}", w), w
    assert re.search(r"[aeiou]", w) and not re.search(r"[^aeiou]{4}", w), w
  stems = Stemmer.Stemmer("english").stemWords([w.lower() for w in words])
  by_stem = collections.defaultdict(set)
  for w, s in zip(words, stems):
    by_stem[s].add(w)
  assert all(len(v) == 1 for v in by_stem.values()), {
      s: v for s, v in by_stem.items() if len(v) > 1}


def test_corpus_documents(world, doc_facts, retriever):
  docs = world.corpus()
  assert [d.title for d in docs] == _names(world)
  assert len({d.id for d in docs}) == len(docs)
  for d in docs:
    assert 8 <= len(d.text.split()) <= 45, d
  # The corpus states every fact of the table, and nothing else.
  table_pairs = {frozenset((f.subject, f.object)) for f in world.facts}
  assert doc_facts.pairs == table_pairs
  # BM25 with an entity's name finds its document first.
  titles = [r[0].title for r in retriever.search(_names(world), 1)]
  assert titles == _names(world)


def test_relations_are_consistent(world, doc_facts):
  for p in world.people:
    doc_facts.one(p, "born")
    doc_facts.one(p, "byear")
    assert len(doc_facts.rel.get((p, "spouse"), ())) <= 1
    assert len(doc_facts.rel.get((p, "company"), ())) <= 1
  for f in world.films:
    director = doc_facts.one(f, "director")
    assert int(doc_facts.one(f, "released")) > int(doc_facts.one(director, "byear"))
  for c in world.companies:
    assert doc_facts.one(c, "founder") in world.people
    assert doc_facts.one(c, "hq") in world.cities
  married = [f for f in world.facts if f.relation == "married_to"]
  assert len(married) == int(world.config.married_fraction *
                             world.config.num_people) // 2
  assert world.value(married[0].object, "married_to") == married[0].subject


# -- pretraining text ------------------------------------------------------------


def test_pretraining_states_exactly_the_internal_facts(world, doc_facts):
  texts = world.pretraining_texts()
  assert 10_000 < sum(len(t) for t in texts) < 300_000
  assert all(len(_sentences(t)) <= world.config.sentences_per_text for t in texts)
  pairs = _pretraining_pairs(world, texts)
  internal = {frozenset((f.subject, f.object)) for f in world.internal}
  assert set(pairs) <= doc_facts.pairs     # only true facts,
  assert set(pairs) == internal            # only and all internal ones,
  assert set(pairs.values()) == {world.config.pretrain_repeats}  # each r times.
  # Per relation, the configured share of facts is internal.
  for rel in S.RELATIONS:
    group = [f for f in world.facts if f.relation == rel]
    n = sum(world.is_internal(f) for f in group)
    assert n == round(world.config.internal_fraction * len(group)), rel
  # Varied: both directions occur (city or film named before the person).
  sentences = [s for t in texts for s in _sentences(t)]
  assert any(re.match(rf"{c} is the birthplace", s)
             for s in sentences for c in world.cities)
  assert any(s.startswith(p) and "directed the film" in s
             for s in sentences for p in world.people)
  assert len(set(sentences)) > 2 * len(internal)
  assert len(world.pretraining_texts(repeats=2)) < len(texts)


def test_is_internal(world):
  f = next(f for f in world.facts if f.relation == "married_to")
  flipped = S.Fact(f.object, f.relation, f.subject)
  assert world.is_internal(flipped) == world.is_internal(f)
  with pytest.raises(ValueError, match="not a fact"):
    world.is_internal(S.Fact(world.people[0], "born_in", "Atlantis"))


# -- questions --------------------------------------------------------------------


def test_gold_answers_follow_from_the_corpus(world, doc_facts):
  texts = world.pretraining_texts()
  stated = set(_pretraining_pairs(world, texts))
  questions = world.questions()
  assert len({q.id for q in questions}) == len(questions)
  assert len({q.question for q in questions}) == len(questions)
  for q in questions:
    answer, pairs, involved = _resolve(q.question, doc_facts)
    assert q.answers == (answer,), q
    assert q.internal == all(p in stated for p in pairs), q
    assert [frozenset((f.subject, f.object)) for f in q.facts] == pairs, q
    assert set(q.entities) == _entity_set(world, involved), q
    assert q.hops == (1 if q.kind == "1hop" else 2)
    assert q.kind == ("comparison" if _COMPARISON.fullmatch(q.question) else
                      f"{len(pairs)}hop")
  kinds = collections.Counter(q.kind for q in questions)
  assert kinds["1hop"] > 50 and kinds["2hop"] > 50 and kinds["comparison"] > 50
  words = [len(q.question.split()) for q in questions]
  assert max(words) <= 16


def test_splits_disjoint_balanced_and_heldout_entities_unseen(
    world, splits, doc_facts):
  assert set(splits) == {"train", "heldout", "heldout_entities"}
  ids = [q.id for qs in splits.values() for q in qs]
  texts = [q.question for qs in splits.values() for q in qs]
  assert len(set(ids)) == len(ids) and len(set(texts)) == len(texts)
  involved = {name: set() for name in splits}
  for name, qs in splits.items():
    for q in qs:
      involved[name] |= _entity_set(world, _resolve(q.question, doc_facts)[2])
  seen = involved["train"] | involved["heldout"]
  assert involved["heldout_entities"] and seen.isdisjoint(
      involved["heldout_entities"])
  # Held-out questions ask about entities training questions involve.
  for q in splits["heldout"]:
    assert _entity_set(world, _resolve(q.question, doc_facts)[2]) <= (
        involved["train"]), q
  for name, qs in splits.items():
    counts = collections.Counter((q.kind, q.internal) for q in qs)
    for kind in S.KINDS:
      a, b = counts[(kind, True)], counts[(kind, False)]
      assert a > 0 and b > 0, (name, kind, counts)
      assert max(a, b) <= 2.5 * min(a, b), (name, kind, counts)
    assert {q.kind for q in qs[:12]} == set(S.KINDS), name  # Any prefix mixes.
  assert len(splits["train"]) > 2 * len(splits["heldout"]) > 0


def test_jsonl_round_trip(tmp_path, splits):
  path = tmp_path / "heldout.jsonl"
  S.write_jsonl(splits["heldout"], path)
  assert S.read_jsonl(path) == splits["heldout"]
  row = json.loads(path.read_text().splitlines()[0])
  q = splits["heldout"][0]
  assert row["idx"] == q.id and row["question"] == q.question
  assert row["answer"] == q.answers[0]
  assert {"kind", "hops", "internal", "facts", "entities"} <= set(row)
  # The generic reader (R1-Searcher format) takes the same file.
  examples = _qa.read_qa_jsonl(path)
  assert [e.answers for e in examples] == [q.answers for q in splits["heldout"]]
  assert examples[0].extra["internal"] == q.internal
  bad = tmp_path / "bad.jsonl"
  bad.write_text(path.read_text().splitlines()[0] + "\n" +
                 json.dumps({**row, "hops": 3}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'hops'"):
    S.read_jsonl(bad)


# -- prompts and the scripted agent --------------------------------------------------


def _block_search(retriever, style, log):
  tags = METHOD_TAGS[style]

  def search(query):
    docs = retriever.search([query], 3)[0]
    block = (tags.docs_begin + "\n" + "".join(
        f"({j + 1}){d.contents()}\n" for j, d in enumerate(docs))
             + tags.docs_end + "\n\n")
    log.append((query, block))
    return block
  return search


def test_prompt():
  for style in S.STYLES:
    p = S.prompt("Who directed Vorantel?", style)
    assert p.endswith("Question: Who directed Vorantel?\n<think>")
    assert len(p.split()) < 60
  assert "<|begin_of_query|>" in S.prompt("q", "r1")
  assert "<external>" in S.prompt("q", "r1pp") and "<internal>" in S.prompt(
      "q", "r1pp")
  with pytest.raises(ValueError, match="style"):
    S.prompt("q", "searchr1")


@pytest.mark.parametrize("style", S.STYLES)
@pytest.mark.parametrize("search_all", [False, True])
def test_scripted_trajectories(world, splits, retriever, doc_facts, style,
                               search_all):
  tags = METHOD_TAGS[style]
  other = METHOD_TAGS["r1" if style == "r1pp" else "r1pp"]
  reward_tags = rewards.R1_TAGS if style == "r1" else rewards.R1PP_TAGS
  corpus_sentences = {s for d in world.corpus() for s in _sentences(d.text)}
  questions = splits["train"][:60] + splits["heldout"][:30]
  for q in questions:
    log = []
    segments = S.scripted_trajectory(q, world, style,
                                     _block_search(retriever, style, log),
                                     search_all=search_all)
    retrieved = [t for t, r in segments if r]
    assert retrieved == [block for _, block in log]  # verbatim, in order
    for (t0, r0), (t1, r1) in zip(segments, segments[1:]):
      assert r0 != r1  # own text and blocks alternate
    own = "".join(t for t, r in segments if not r)
    full = "".join(t for t, _ in segments)
    # Each block follows its query, and the query names the hop's entity.
    for j, (t, r) in enumerate(segments):
      if r:
        before = segments[j - 1][0]
        assert before.endswith(tags.query_end)
        query = before[before.rindex(tags.query_begin) + len(tags.query_begin):
                       -len(tags.query_end)]
        assert query == log[retrieved.index(t)][0]
    for begin, end in ((tags.query_begin, tags.query_end),
                       (S.INTERNAL_BEGIN, S.INTERNAL_END)):
      assert own.count(begin) == own.count(end)
    for tag in (other.query_begin, other.docs_begin):
      assert tag not in full
    if style == "r1":
      assert S.INTERNAL_BEGIN not in full
    assert own.count(S.THINK_END) == 1 and "<think>" not in own
    m = re.fullmatch(r"(?s).*</think>\n<answer>(.*)</answer>", full)
    assert m and m.group(1) == q.answers[0], full
    # Searches: every fact when search_all, else exactly the non-internal ones.
    needed = [f for f in q.facts if search_all or not world.is_internal(f)]
    assert len(log) == len(needed), (q, log)
    for (query, block), f in zip(log, needed):
      assert f.subject in query or f.object in query
      target = f.object if f.subject in query else f.subject
      assert target in block
    # What the agent recalls or restates is a sentence of the corpus.
    stated = re.findall(r"<internal>(.*?)</internal>", own)
    if style == "r1pp":
      assert len(stated) == len(q.facts) - len(needed)
    for s in stated:
      assert s in corpus_sentences
    _, pairs, _ = _resolve(q.question, doc_facts)
    assert len(pairs) == len(q.facts)
    # The project's trace parser (written apart) sees a well-formed, correct
    # completion with these retrievals.
    trace = rewards.parse_trace(segments, reward_tags)
    assert trace.well_formed, (trace.problems, full)
    assert trace.answer == q.answers[0]
    assert trace.num_retrievals == len(log) and trace.num_hallucinated_docs == 0
    assert list(trace.queries) == [query for query, _ in log]
    assert len(trace.internal) == len(stated)


def test_scripted_agent_retries_then_fails_on_useless_search(world, splits):
  q = next(q for q in splits["train"] if not q.internal)
  calls = []

  def useless(query):
    calls.append(query)
    return "<document>None</document>"
  with pytest.raises(ValueError, match="did not return"):
    S.scripted_trajectory(q, world, "r1pp", useless)
  assert len(calls) == 2 and calls[1] in q.question


def test_sft_questions(splits):
  qs = S.sft_questions(splits["train"], 20, one_hop_only=True, seed=0)
  assert len(qs) == 20 and all(q.kind == "1hop" for q in qs)
  assert sum(q.internal for q in qs) == 10
  assert qs == S.sft_questions(splits["train"], 20, one_hop_only=True, seed=0)
  mixed = S.sft_questions(splits["train"], 30, one_hop_only=False, seed=0)
  assert {q.kind for q in mixed} == set(S.KINDS)
  with pytest.raises(ValueError, match="n=100000"):
    S.sft_questions(splits["train"], 100000)


def test_generation_is_fast():
  t = time.perf_counter()
  w = S.make_world()
  w.corpus()
  w.pretraining_texts()
  S.make_splits(w, 0)
  assert time.perf_counter() - t < 5.0


def test_pairs_unique_facts(world):
  # Two facts never share a pair of names: a co-occurring pair identifies a fact.
  pairs = [frozenset((f.subject, f.object)) for f in world.facts]
  dupes = [p for p, n in collections.Counter(pairs).items() if n > 1]
  assert not dupes
  assert all(len(p) == 2 for p in pairs)


def test_contradicts_internal_flags_renamed_answers_that_unlearn_a_fact(world):
  """A renamed world's question contradicts the model's knowledge when a fact
  it states gives one of its names another partner, under the same relation
  and on the same side, than an internal fact of the real world does (the
  reference below reads the facts directly, not the question's hops)."""
  other = world.renamed(3)
  internal = [f for f in world.facts if world.is_internal(f)]

  def clash(f, named):
    for g in internal:
      if g.relation != f.relation:
        continue
      if f.relation == "married_to":
        if named in (g.subject, g.object) and {g.subject, g.object} != {
            f.subject, f.object}:
          return True
      elif (named == f.subject == g.subject and g.object != f.object) or (
          named == f.object == g.object and g.subject != f.subject):
        return True
    return False

  seen = collections.Counter()
  for q in other.questions():
    if q.kind == "1hop":
      (f,) = q.facts
      expected = clash(f, q.entities[0])
    elif q.kind == "comparison":
      expected = any(clash(f, f.subject) for f in q.facts)
    else:
      continue
    got = S.contradicts_internal(q, other, world)
    assert got == expected, q
    seen[q.kind, got] += 1
  assert all(seen[k, b] > 10 for k in ("1hop", "comparison") for b in (0, 1)), seen
  # The real world's own questions never contradict it.
  assert not any(S.contradicts_internal(q, world, world) for q in world.questions())


def test_renamed_world_is_the_same_world_under_a_name_shuffle(world, splits):
  """A renamed world maps every fact through one permutation of the names of
  each kind (years kept), keeps the held-out entities in place, has nothing
  internal, and answers its own questions from its own corpus."""
  keep = {e for q in splits["heldout_entities"] for e in q.entities}
  other = world.renamed(3, keep=keep)
  assert other == world.renamed(3, keep=keep)
  assert other.facts != world.renamed(4, keep=keep).facts
  rename = {}
  for old, new in ((o, n) for kind in ("people", "films", "companies", "cities")
                   for o, n in zip(getattr(world, kind), getattr(other, kind))):
    rename[old] = new
    assert world.kind_of(old) == other.kind_of(new)
  assert sorted(rename) == sorted(rename.values())  # a permutation
  assert all(rename[n] == n for n in keep)
  moved = [n for n in rename if rename[n] != n]
  assert len(moved) > 0.8 * (len(rename) - len(keep))
  def key(subject, relation, obj):  # married_to is symmetric
    ends = sorted((subject, obj)) if relation == "married_to" else (subject, obj)
    return (ends[0], relation, ends[1])

  r = lambda n: rename.get(n, n)
  assert {key(r(f.subject), f.relation, r(f.object)) for f in world.facts} == {
      key(f.subject, f.relation, f.object) for f in other.facts}
  assert not other.internal and not any(map(other.is_internal, other.facts))
  facts = DocFacts(other.corpus())
  one_hop = [q for q in other.questions() if q.kind == "1hop"]
  assert len(one_hop) > 100
  for q in one_hop:
    (fact,) = q.facts
    assert frozenset((fact.subject, fact.object)) in facts.pairs, q
    assert not q.internal


def test_pretraining_shuffles_state_the_same_facts_differently(world):
  """Each shuffle states every internal fact `pretrain_repeats` times, in
  other texts and another order; shuffle 0 is the default text."""
  base = world.pretraining_texts()
  assert world.pretraining_texts(shuffle=0) == base
  one, two = world.pretraining_texts(shuffle=1), world.pretraining_texts(shuffle=2)
  assert one != base and two != one
  for texts in (one, two):
    pairs = _pretraining_pairs(world, texts)
    assert set(pairs) == {frozenset((f.subject, f.object)) for f in world.internal}
    assert set(pairs.values()) == {world.config.pretrain_repeats}
  # Not the same texts reordered: the rows a model sees differ.
  assert len(set(one) & set(base)) < 0.2 * len(base)


def test_perturbed_world_keeps_the_internal_facts_and_shuffles_the_rest(world):
  """A perturbed world states every internal fact as the world does, gives
  the other facts of each relation other objects drawn from the same ones
  (each entity in as many facts of a relation as before), and answers its
  questions from its own corpus, read back independently."""
  other = world.perturbed(2)
  assert other == world.perturbed(2) and other.facts != world.perturbed(3).facts
  assert other.internal == world.internal
  assert world.internal <= set(other.facts)
  assert (other.people, other.films, other.companies, other.cities) == (
      world.people, world.films, world.companies, world.cities)
  for relation in S.RELATIONS:
    def free(w):
      return [f for f in w.facts if f.relation == relation and f not in w.internal]
    old, new = free(world), free(other)
    assert len(old) == len(new)
    # The same subjects and the same multiset of objects (both ends of a
    # marriage: everyone married as often as before).
    if relation == "married_to":
      ends = lambda fs: collections.Counter(x for f in fs for x in (f.subject, f.object))
      assert ends(old) == ends(new)
    else:
      assert sorted(f.subject for f in old) == sorted(f.subject for f in new)
      assert collections.Counter(f.object for f in old) == collections.Counter(
          f.object for f in new)
  changed = set(other.facts) - set(world.facts)
  assert len(changed) > 0.5 * (len(world.facts) - len(world.internal))
  # Its corpus states its facts: every 1-hop answer is read from it.
  facts = DocFacts(other.corpus())
  for q in (q for q in other.questions() if q.kind == "1hop"):
    (fact,) = q.facts
    assert frozenset((fact.subject, fact.object)) in facts.pairs, q
    assert q.internal == (fact in world.internal)


def test_comparison_trajectory_orders_the_years_before_answering(world, splits,
                                                                 retriever):
  """The scripted agent states the two years in order, then answers."""
  comparisons = [q for q in splits["train"] if q.kind == "comparison"][:10]
  for q in comparisons:
    segments = S.scripted_trajectory(
        q, world, "r1pp", _block_search(retriever, "r1pp", []))
    own = "".join(t for t, r in segments if not r)
    years = sorted(int(f.object) for f in q.facts)
    assert f" {years[0]} is before {years[1]}. So the answer is {q.answers[0]}." in own


def test_restated_chained_trajectory_asks_the_remaining_one_hop_question(
    world, splits, retriever, doc_facts):
  """With restate="chained" the agent, after a chained question's first hop,
  writes the 1-hop question that remains (parsed here from its phrasing
  alone): it asks about the bridge and has the chained question's answer;
  then it continues as a 1-hop trajectory, and the trace stays well formed.
  Other kinds are written as without restate."""
  chained = [q for q in splits["train"] if q.kind == "2hop"]
  assert len({re.sub(re.escape(q.entities[0]), "X", q.question)
              for q in chained}) >= 10  # most templates
  for q in chained:
    segments = S.scripted_trajectory(
        q, world, "r1pp", _block_search(retriever, "r1pp", []), restate="chained")
    own = "".join(t for t, r in segments if not r)
    found = re.findall(r"\nQuestion: (.*?)\n", own)
    assert len(found) == 1, own
    answer, pairs, involved = _resolve(found[0], doc_facts)
    assert len(pairs) == 1 and answer == q.answers[0], (q.question, found[0])
    _, chain_pairs, _ = _resolve(q.question, doc_facts)
    bridge = (set(chain_pairs[0]) - {q.entities[0]}).pop()
    assert bridge in found[0] and q.entities[0] not in found[0]
    assert own.index(found[0]) > own.index(bridge)  # after the first hop
    trace = rewards.parse_trace(segments, rewards.R1PP_TAGS)
    assert trace.well_formed and trace.answer == q.answers[0]
  for q in [q for q in splits["train"] if q.kind != "2hop"][:20]:
    search = _block_search(retriever, "r1pp", [])
    assert (S.scripted_trajectory(q, world, "r1pp", search, restate="chained")
            == S.scripted_trajectory(q, world, "r1pp", search))
  with pytest.raises(ValueError, match="chained"):
    S.reduced_question(next(q for q in splits["train"] if q.kind == "1hop"), "X")


def test_every_hop_agent_restates_what_remains_after_each_hop(
    world, splits, retriever, doc_facts):
  """restate="every_hop": after each hop of every kind the agent writes the
  question that remains (1-hop and comparison: the question itself;
  chained: the 1-hop question about the bridge, parsed here from its
  phrasing), and the next words are the next hop's or the conclusion. With
  the restated lines cut out, the trace is the plain agent's."""
  for style, search_all in (("r1", True), ("r1pp", False)):
    for q in splits["train"]:
      search = _block_search(retriever, style, [])
      segments = S.scripted_trajectory(q, world, style, search,
                                       search_all=search_all,
                                       restate="every_hop")
      own = "".join(t for t, r in segments if not r)
      found = re.findall(r"\nQuestion: (.*?)\n", own)
      assert len(found) == q.hops, own
      if q.kind == "2hop":
        _, chain_pairs, _ = _resolve(q.question, doc_facts)
        bridge = (set(chain_pairs[0]) - {q.entities[0]}).pop()
        for text in found:
          answer, pairs, _ = _resolve(text, doc_facts)
          assert len(pairs) == 1 and answer == q.answers[0], (q.question, text)
          assert bridge in text and q.entities[0] not in text
      else:
        assert found == [q.question] * q.hops
      after = [own[m.end():] for m in re.finditer(r"\nQuestion: .*?\n", own)]
      for text in after[:-1]:
        assert text.startswith("I need"), text[:40]
      assert after[-1].startswith(
          "So the answer is" if q.kind != "comparison" else
          "{} is before".format(min(int(f.object) for f in q.facts)))
      plain = "".join(t for t, r in S.scripted_trajectory(
          q, world, style, search, search_all=search_all) if not r)
      assert re.sub(r"\nQuestion: .*?\n", " ", own) == plain
      trace = rewards.parse_trace(segments, rewards.METHOD_TAGSETS[style])
      assert trace.well_formed and trace.answer == q.answers[0]
  q = splits["train"][0]
  with pytest.raises(ValueError, match="restate='sometimes'"):
    S.scripted_trajectory(q, world, "r1", _block_search(retriever, "r1", []),
                          restate="sometimes")


def test_one_search_comparison_reads_both_years_from_one_block(
    world, splits, retriever, doc_facts):
  """compare="one_search": a comparison whose facts are both searched is one
  query naming both, whose block holds both years; the agent states both
  facts, writes the answer's year first ("before" for the earlier, "after"
  for the later: checked against the documents' years) and does not
  restate the question after the documents. A comparison with an internal fact (R1-Searcher++,
  not searching it) and every other kind are the two-search agent's."""
  comparisons = [q for q in splits["train"] if q.kind == "comparison"]
  one = 0
  for style, search_all in (("r1", True), ("r1pp", False)):
    for q in comparisons:
      log = []
      search = _block_search(retriever, style, log)
      segments = S.scripted_trajectory(q, world, style, search,
                                       search_all=search_all,
                                       restate="every_hop",
                                       compare="one_search")
      searched = [f for f in q.facts if search_all or not world.is_internal(f)]
      if len(searched) < 2:
        assert segments == S.scripted_trajectory(
            q, world, style, _block_search(retriever, style, []),
            search_all=search_all, restate="every_hop")
        continue
      answer, pairs, _ = _resolve(q.question, doc_facts)
      years = {e: y for e, y in (sorted(p, key=str.isdigit) for p in pairs)}
      if not all(y in log[0][1] for y in years.values()):
        continue  # the block missed a year: the two-search fallback
      one += 1
      assert len(log) == 1
      query = log[0][0]
      assert all(e in query for e in years), query
      own = "".join(t for t, r in segments if not r)
      assert "\nQuestion:" not in own and own.count(q.question) == 1
      for e, y in years.items():
        assert f"{e} was {'born' if 'born' in q.question else 'released'} in "\
            f"the year {y}." in own
      m = re.search(r" (\d{4}) is (before|after) (\d{4})\. So the answer is", own)
      assert m, own
      mine, other = years[answer], next(y for e, y in years.items()
                                        if e != answer)
      assert m.group(1) == mine and m.group(3) == other
      assert m.group(2) == ("before" if int(mine) < int(other) else "after")
      trace = rewards.parse_trace(segments, rewards.METHOD_TAGSETS[style])
      assert trace.well_formed and trace.answer == answer == q.answers[0]
      assert trace.num_retrievals == 1
  assert one >= len(comparisons)
  q = comparisons[0]
  with pytest.raises(ValueError, match="compare='both'"):
    S.scripted_trajectory(q, world, "r1", _block_search(retriever, "r1", []),
                          compare="both")
  for q in [q for q in splits["train"] if q.kind != "comparison"][:20]:
    assert (S.scripted_trajectory(q, world, "r1", _block_search(
        retriever, "r1", []), search_all=True, compare="one_search")
            == S.scripted_trajectory(q, world, "r1", _block_search(
                retriever, "r1", []), search_all=True))


def test_premature_agent_answers_a_chained_question_with_its_bridge(
    world, splits, retriever, doc_facts):
  """premature=True: the imperfect agent stops after a chained question's
  first hop and answers the bridge it found, which is wrong; other kinds
  are unaffected."""
  for q in [q for q in splits["train"] if q.kind == "2hop"][:30]:
    log = []
    segments = S.scripted_trajectory(
        q, world, "r1", _block_search(retriever, "r1", log), search_all=True,
        premature=True)
    trace = rewards.parse_trace(segments, rewards.R1_TAGS)
    _, pairs, _ = _resolve(q.question, doc_facts)
    bridge = (set(pairs[0]) - {q.entities[0]}).pop()
    assert trace.well_formed and trace.answer == bridge != q.answers[0]
    assert len(log) == 1 and trace.num_retrievals == 1
  for q in [q for q in splits["train"] if q.kind != "2hop"][:20]:
    search = _block_search(retriever, "r1", [])
    assert (S.scripted_trajectory(q, world, "r1", search, premature=True)
            == S.scripted_trajectory(q, world, "r1", search))
