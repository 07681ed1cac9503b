"""The synthetic knowledge-base task: a random world, its corpus, its questions.

A tiny model cannot learn to search on real data on a 2-core CPU, so the demo
uses a world small enough to memorise in minutes, with invented names so that
no answer can be guessed:

The world (`make_world(WorldConfig(...))`, deterministic given `seed`)
  people (default 50), films (25), companies (15), cities (10), each with a
  pronounceable syllable-built name; every name word is unique in the world
  (also after stripping common English endings, so a stemmer cannot merge
  two names) and no name word is a word of the templates. People are two
  words ("Dova Kelmir"), films and cities one word, companies one word plus a
  suffix ("Tavin Works"). Facts (`Fact(subject, relation, object)`):

    born_in          person  -> city     (cities are filled evenly)
    birth_year       person  -> year     (1900-1985)
    married_to       person <-> person   (symmetric, stored once with
                                          subject < object; married_fraction)
    directed         film    -> person   (a person directs at most 2 films)
    released_year    film    -> year     (25-60 years after its director's birth)
    founded          company -> person   (a person founds at most 1 company)
    headquartered_in company -> city

  A chosen fraction of each relation's facts (`internal_fraction`, drawn per
  fact from the seed) is the model's internal knowledge: `World.is_internal`.

The corpus (`World.corpus()`): one `Doc` per entity, titled with its name, one
  fact per sentence, e.g. "Dova Kelmir was born in the city of Sarnu. Dova
  Kelmir was born in the year 1931. Dova Kelmir directed the film Vorantel."
  (14-45 words; 21-56 tokens of a 1024-piece SentencePiece model trained on
  the demo's texts); a city's document lists who was born there and which
  companies are headquartered there. BM25 with an entity's name finds its
  document first.

The pretraining text (`World.pretraining_texts()`): only the internal facts,
  each stated `pretrain_repeats` times (default 30) in varied templates, both
  directions where natural ("X was born in Y." / "Y is the birthplace of X."),
  shuffled and grouped `sentences_per_text` (8) sentences per text. One fact
  per sentence; a non-internal fact is never stated. By default 96 of the 192
  facts are internal: 360 texts, 118 KB, about 29k tokens.

Questions (`Question`, all candidates from `World.questions()`):
  kind "1hop"        one fact: "Where was X born?", "Who directed F?" ...
  kind "2hop"        two chained facts: "In which city was the director of F
                     born?", "Where is the company founded by X headquartered?"
  kind "comparison"  two facts compared: "Who was born first, A or B?",
                     "Which film was released first, F or G?"; the answer is
                     one of the two names. `hops` is 2 (two lookups).
  Every answer is unique in the world by construction (functional relations,
  distinct years for comparisons). Labels: `internal` (every fact it needs is
  internal), `facts` (the facts used, in reasoning order), `entities` (the
  people, films and companies involved: named, bridge and answer; cities and
  years are values, not entities).

Splits (`make_splits(world, seed)`):
  "heldout_entities"  questions only about a held-out group of people (with
                      their spouses, films and companies), about whom no
                      other split asks anything;
  "train" / "heldout" the other questions, split per (kind, internal) stratum;
                      every entity of a held-out question also occurs in
                      training questions.
  Each split mixes the kinds, and within a kind internal and corpus-only
  questions differ at most `max_ratio` (default 2) to 1; any prefix of a split
  has the split's mix. With the default world and seed 0: 259 train, 88
  heldout (24 2-hop) and 99 heldout_entities questions.
  `write_jsonl` / `read_jsonl`: R1-Searcher's eval format (`idx`, `question`,
  `answer`) plus the labels (`kind`, `hops`, `internal`, `facts`, `entities`).

The cold start (`scripted_trajectory(question, world, style, search)`): a
  scripted agent writes the completion that follows `prompt(question, style)`
  (which ends with an opened `<think>`), as (text, is_retrieved) segments.
  Per hop it states what it needs; an internal fact is recalled (style "r1":
  stated in the reasoning; "r1pp": inside `<internal>...</internal>`), any
  other fact is searched with the entity name plus relation words
  (`<|begin_of_query|>q<|end_of_query|>` or `<external>q</external>`); the
  block `search(q)` returns is spliced verbatim, and the agent restates the
  fact as the documents give it. It ends with "So the answer is X.</think>"
  and `<answer>X</answer>`. `search_all=True` makes it search even what it
  knows; `sft_questions(..., one_hop_only=True)` picks a small 1-hop-only set:
  both are the deliberate imperfections of the demo's cold start.

Main entry points:
  make_world(WorldConfig(...)) -> World     .corpus(), .pretraining_texts(),
                                            .questions(), .is_internal(fact)
  make_splits(world, seed) -> {"train", "heldout", "heldout_entities"}
  write_jsonl(questions, path), read_jsonl(path)
  question_from_example(example, where)     a row read back (e.g. from a
                                            seqio Task) -> Question
  prompt(question, style), scripted_trajectory(question, world, style, search),
  contradicts_internal(question, asked_in, world)
  sft_questions(questions, n, one_hop_only=..., seed=...)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import re
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from rsearch_jax.data._qa import iter_qa_rows
from rsearch_jax.prompts import METHOD_TAGS
from rsearch_jax.retrieval._base import Doc

PathLike = str | os.PathLike

RELATIONS = ("born_in", "birth_year", "married_to", "directed",
             "released_year", "founded", "headquartered_in")
KINDS = ("1hop", "2hop", "comparison")
RESTATE_MODES = ("none", "chained", "every_hop")
COMPARE_MODES = ("two_searches", "one_search")
STYLES = ("r1", "r1pp")
INTERNAL_BEGIN, INTERNAL_END = "<internal>", "</internal>"
THINK_BEGIN, THINK_END = "<think>", "</think>"
ANSWER_BEGIN, ANSWER_END = "<answer>", "</answer>"


# -- the world ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Sizes and randomness of a world.

  Attributes:
    seed: everything (names, facts, internal choice, templates) follows it.
    num_people / num_films / num_companies / num_cities: entity counts.
    married_fraction: fraction of people in a married couple.
    internal_fraction: fraction of each relation's facts that the
      pretraining text states.
    pretrain_repeats: how many times the pretraining text states each
      internal fact (cycling through that relation's templates).
    sentences_per_text: sentences per pretraining text (one training row).
  """

  seed: int = 0
  num_people: int = 50
  num_films: int = 25
  num_companies: int = 15
  num_cities: int = 10
  married_fraction: float = 0.5
  internal_fraction: float = 0.5
  pretrain_repeats: int = 30
  sentences_per_text: int = 8

  def __post_init__(self):
    def need(ok: bool, message: str):
      if not ok:
        raise ValueError(f"WorldConfig: {message}")
    for name in ("seed", "num_people", "num_films", "num_companies",
                 "num_cities", "pretrain_repeats", "sentences_per_text"):
      value = getattr(self, name)
      need(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
           f"{name}={value!r} should be an int")
    need(self.seed >= 0, f"seed={self.seed} should be >= 0")
    need(self.num_people >= 2, f"num_people={self.num_people} should be >= 2")
    need(self.num_cities >= 1, f"num_cities={self.num_cities} should be >= 1")
    need(self.num_films >= 0, f"num_films={self.num_films} should be >= 0")
    need(0 <= self.num_companies <= self.num_people,
         f"num_companies={self.num_companies} should be in [0, num_people="
         f"{self.num_people}] (a person founds at most one company)")
    need(self.num_films <= 2 * self.num_people,
         f"num_films={self.num_films} should be <= 2 * num_people (a person "
         "directs at most two films)")
    need(self.pretrain_repeats >= 1,
         f"pretrain_repeats={self.pretrain_repeats} should be >= 1")
    need(self.sentences_per_text >= 1,
         f"sentences_per_text={self.sentences_per_text} should be >= 1")
    for name in ("married_fraction", "internal_fraction"):
      value = getattr(self, name)
      need(isinstance(value, (int, float)) and 0.0 <= value <= 1.0,
           f"{name}={value!r} should be a number in [0, 1]")


@dataclasses.dataclass(frozen=True, order=True)
class Fact:
  """`subject relation object`, e.g. Fact("Vorantel", "directed", "Dova Kelmir").

  Years are strings ("1931"); `married_to` is stored with subject < object.
  """

  subject: str
  relation: str
  object: str


def _canonical(fact: Fact) -> Fact:
  if fact.relation == "married_to" and fact.object < fact.subject:
    return Fact(fact.object, fact.relation, fact.subject)
  return fact


# Syllables: consonant onsets, plain vowels, a few soft codas on the last
# syllable. Pronounceable, and varied enough for thousands of distinct words.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v",
           "z", "br", "dr", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "a", "o", "ai")
_CODAS = ("", "", "n", "r", "l", "m", "k")
_COMPANY_SUFFIXES = ("Works", "Group", "Labs", "Holdings", "Studios",
                     "Industries")
# A stemmer could merge "Tavins" with "Tavin": names are compared after
# stripping these endings, so every name keeps its own BM25 term.
_ENDINGS = ("ings", "ing", "ies", "ers", "ed", "er", "es", "en", "al", "ly",
            "s", "e", "y", "i")


def _stem_key(word: str) -> str:
  key = word.lower()
  changed = True
  while changed and len(key) > 3:
    changed = False
    for end in _ENDINGS:
      if key.endswith(end) and len(key) - len(end) >= 3:
        key, changed = key[:-len(end)], True
        break
  return key


class _NameMaker:
  """Draws syllable words that are new in the world (and not template words)."""

  def __init__(self, rng: np.random.Generator, reserved: Iterable[str]):
    self.rng = rng
    self.taken = {_stem_key(w) for w in reserved}

  def word(self, syllables: int) -> str:
    for _ in range(10_000):
      parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS)
               for _ in range(syllables)]
      w = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
      key = _stem_key(w)
      if len(w) >= 4 and key not in self.taken:
        self.taken.add(key)
        return w
    raise RuntimeError("name generator exhausted")  # Not reachable in practice.


def _template_words() -> set[str]:
  texts = [t for ts in _PRETRAIN_TEMPLATES.values() for t in ts]
  texts += list(_DOC_SENTENCES.values()) + list(_NEED.values())
  texts += [t for ts in _QUESTION_TEMPLATES.values() for t in ts]
  texts += list(_COMPANY_SUFFIXES) + ["is a city", "were born in", "and",
                                      "So the answer is", "is before"]
  return {w for t in texts for w in re.findall(r"[A-Za-z]+", t)}


@dataclasses.dataclass(frozen=True)
class World:
  """A generated world; see the module docstring. Build with `make_world`.

  Attributes:
    config: the config it was made from.
    people / films / companies / cities: entity names, in generation order.
    facts: every fact, sorted.
    internal: the facts the pretraining text states.
  """

  config: WorldConfig
  people: tuple[str, ...]
  films: tuple[str, ...]
  companies: tuple[str, ...]
  cities: tuple[str, ...]
  facts: tuple[Fact, ...]
  internal: frozenset[Fact]

  # -- lookups ----------------------------------------------------------------

  @functools.cached_property
  def _table(self) -> dict[tuple[str, str], str]:
    table = {}
    for f in self.facts:
      table[(f.subject, f.relation)] = f.object
      if f.relation == "married_to":
        table[(f.object, f.relation)] = f.subject
    return table

  @functools.cached_property
  def _kinds(self) -> dict[str, str]:
    return {**{n: "person" for n in self.people}, **{n: "film" for n in self.films},
            **{n: "company" for n in self.companies},
            **{n: "city" for n in self.cities}}

  @functools.cached_property
  def _about(self) -> dict[str, list[Fact]]:
    about: dict[str, list[Fact]] = {}
    for f in self.facts:
      about.setdefault(f.subject, []).append(f)
      if f.relation in ("married_to", "directed", "founded", "born_in",
                        "headquartered_in"):
        about.setdefault(f.object, []).append(f)
    return about

  def name_words(self) -> list[str]:
    """Every word of every entity name (company suffixes included), sorted:
    the demo's tokenizer makes each one a single piece."""
    names = self.people + self.films + self.companies + self.cities
    return sorted({w for n in names for w in n.split()})

  def kind_of(self, name: str) -> str:
    """"person" | "film" | "company" | "city"; KeyError for an unknown name."""
    return self._kinds[name]

  def value(self, subject: str, relation: str) -> str | None:
    """The object of `subject relation ?` (either side of married_to), or None."""
    return self._table.get((subject, relation))

  def fact(self, subject: str, relation: str) -> Fact:
    """The fact `subject relation ?`, canonical; KeyError when there is none."""
    obj = self._table[(subject, relation)]
    return _canonical(Fact(subject, relation, obj))

  def founded_by(self, person: str) -> str | None:
    """The company `person` founded (at most one), or None."""
    for f in self._about.get(person, ()):
      if f.relation == "founded" and f.object == person:
        return f.subject
    return None

  def facts_about(self, name: str) -> list[Fact]:
    """Facts whose subject or (entity) object is `name`, in fact order."""
    return list(self._about.get(name, ()))

  def is_internal(self, fact: Fact) -> bool:
    """Whether the pretraining text states `fact` (either married_to order).

    Raises:
      ValueError: `fact` is not a fact of this world.
    """
    c = _canonical(fact)
    if c not in self._fact_set:
      raise ValueError(f"not a fact of this world: {fact}")
    return c in self.internal

  @functools.cached_property
  def _fact_set(self) -> frozenset[Fact]:
    return frozenset(self.facts)

  # -- texts -------------------------------------------------------------------

  def sentence(self, fact: Fact, about: str | None = None) -> str:
    """The corpus sentence stating `fact`, from the side of `about` (default
    the subject; for married_to and founded the other side reads naturally
    too)."""
    about = fact.subject if about is None else about
    if fact.relation == "married_to" and about == fact.object:
      return _DOC_SENTENCES["married_to"].format(s=fact.object, o=fact.subject)
    if fact.relation in ("directed", "founded") and about == fact.object:
      return _DOC_SENTENCES[fact.relation + "_inverse"].format(
          s=fact.subject, o=fact.object)
    return _DOC_SENTENCES[fact.relation].format(s=fact.subject, o=fact.object)

  def corpus(self) -> list[Doc]:
    """One document per entity (people, films, companies, cities, in order)."""
    docs = []
    for i, p in enumerate(self.people):
      order = ("born_in", "birth_year", "married_to", "directed", "founded")
      facts = sorted(self._about.get(p, ()),
                     key=lambda f: (order.index(f.relation), f))
      text = " ".join(self.sentence(f, about=p) for f in facts)
      docs.append(Doc(id=f"person-{i}", title=p, text=text))
    for i, name in enumerate(self.films):
      text = " ".join(self.sentence(self.fact(name, r))
                      for r in ("directed", "released_year"))
      docs.append(Doc(id=f"film-{i}", title=name, text=text))
    for i, name in enumerate(self.companies):
      text = " ".join(self.sentence(self.fact(name, r))
                      for r in ("founded", "headquartered_in"))
      docs.append(Doc(id=f"company-{i}", title=name, text=text))
    for i, city in enumerate(self.cities):
      born = [f.subject for f in self._about.get(city, ()) if f.relation == "born_in"]
      based = [f.subject for f in self._about.get(city, ())
               if f.relation == "headquartered_in"]
      parts = [f"{city} is a city."]
      if born:
        verb = "was" if len(born) == 1 else "were"
        parts.append(f"{_join_names(born)} {verb} born in {city}.")
      parts += [f"{c} is headquartered in {city}." for c in based]
      docs.append(Doc(id=f"city-{i}", title=city, text=" ".join(parts)))
    return docs

  def pretraining_texts(self, repeats: int | None = None,
                        sentences_per_text: int | None = None,
                        seed: int | None = None, shuffle: int = 0) -> list[str]:
    """The internal facts, each stated `repeats` times, as short texts.

    Each repetition of a fact uses the next of its relation's templates (so
    all paraphrases and both directions occur). A text gathers one entity's
    internal facts (up to `sentences_per_text` sentences, in shuffled order),
    so names recur within a text as they do in real prose: that repetition
    is what teaches a small model to copy a name from its context (to search
    for the entity a question names). The texts are then shuffled.

    Args:
      repeats / sentences_per_text: default to the config's values.
      seed: shuffling seed; defaults to the world's seed.
      shuffle: which of the seed's shufflings (0, 1, ...): each one groups,
        orders and phrases the same facts differently.
    """
    repeats = self.config.pretrain_repeats if repeats is None else repeats
    per_text = (self.config.sentences_per_text if sentences_per_text is None
                else sentences_per_text)
    if repeats < 1 or per_text < 1:
      raise ValueError(f"pretraining_texts: repeats={repeats} and "
                       f"sentences_per_text={per_text} should be >= 1")
    rng = np.random.default_rng([self.config.seed if seed is None else seed, 1]
                                + ([shuffle] if shuffle else []))
    by_subject: dict[str, list[Fact]] = {}
    for fact in sorted(self.internal):
      by_subject.setdefault(fact.subject, []).append(fact)
    start = {f: int(rng.integers(len(_PRETRAIN_TEMPLATES[f.relation])))
             for f in sorted(self.internal)}
    texts = []
    for r in range(repeats):
      for subject in sorted(by_subject):
        facts = by_subject[subject]
        sentences = []
        for i in rng.permutation(len(facts)):
          f = facts[i]
          templates = _PRETRAIN_TEMPLATES[f.relation]
          t = templates[(start[f] + r) % len(templates)]
          sentences.append(t.format(s=f.subject, o=f.object))
        texts += [" ".join(sentences[i:i + per_text])
                  for i in range(0, len(sentences), per_text)]
    return [texts[i] for i in rng.permutation(len(texts))]

  def renamed(self, seed: int, keep: Iterable[str] = ()) -> World:
    """The same world with its names shuffled within each kind (people among
    people, cities among cities ...), every fact carried along, and no fact
    internal: a counterfactual world the model cannot have memorized.

    The cold start adds trajectories in such worlds (`data.sft_renamed_worlds`)
    so that its answers can only be read from the documents: "Where was X
    born?" has another answer in each renamed world. Names in `keep` keep
    their place (the held-out entities, which no training text may involve).
    """
    rng = np.random.default_rng([self.config.seed, 7, seed])
    keep = frozenset(keep)
    rename: dict[str, str] = {}
    for group in (self.people, self.films, self.companies, self.cities):
      moving = [n for n in group if n not in keep]
      rename.update(zip(moving, (moving[i] for i in rng.permutation(len(moving)))))
    r = lambda name: rename.get(name, name)  # years are kept
    facts = tuple(sorted(_canonical(Fact(r(f.subject), f.relation, r(f.object)))
                         for f in self.facts))
    return World(config=self.config, people=tuple(map(r, self.people)),
                 films=tuple(map(r, self.films)),
                 companies=tuple(map(r, self.companies)),
                 cities=tuple(map(r, self.cities)), facts=facts,
                 internal=frozenset())

  def perturbed(self, seed: int) -> World:
    """The same world with its internal facts kept and every other fact's
    object shuffled among that relation's non-internal facts (a film's
    director among the directors of the non-internal `directed` facts, a
    spouse among the non-internal couples' ...), so each entity keeps as many
    facts of each relation as before.

    The model knows such a world's internal facts (they are the pretraining
    text's) and cannot have memorized the others: a cold start in it
    (`data.sft_perturbed_worlds`) recalls what the model knows and reads the
    rest, without stating anything that contradicts the pretraining text.
    """
    rng = np.random.default_rng([self.config.seed, 8, seed])
    facts = []
    for relation in RELATIONS:
      group = [f for f in self.facts if f.relation == relation]
      free = [f for f in group if f not in self.internal]
      facts += [f for f in group if f in self.internal]
      objects = [free[i].object for i in rng.permutation(len(free))]
      facts += [_canonical(Fact(f.subject, relation, o))
                for f, o in zip(free, objects)]
    return dataclasses.replace(self, facts=tuple(sorted(facts)))

  # -- questions ---------------------------------------------------------------

  def questions(self) -> list[Question]:
    """Every candidate question (all comparison pairs included); see
    `make_splits` for the balanced, disjoint sets used for training."""
    return _all_questions(self)


def _join_names(names: Sequence[str]) -> str:
  if len(names) == 1:
    return names[0]
  return ", ".join(names[:-1]) + " and " + names[-1]


def make_world(config: WorldConfig | None = None) -> World:
  """Generates the world of `config` (default `WorldConfig()`)."""
  cfg = WorldConfig() if config is None else config
  rng = np.random.default_rng([cfg.seed, 0])
  names = _NameMaker(rng, _template_words())
  cities = tuple(names.word(2) for _ in range(cfg.num_cities))
  people = tuple(f"{names.word(2)} {names.word(2)}" for _ in range(cfg.num_people))
  films = tuple(names.word(3) for _ in range(cfg.num_films))
  companies = tuple(f"{names.word(2)} {rng.choice(_COMPANY_SUFFIXES)}"
                    for _ in range(cfg.num_companies))

  facts: list[Fact] = []
  # Birth cities as even as possible: a city document lists its natives.
  homes = np.resize(rng.permutation(cfg.num_cities), cfg.num_people)
  homes = rng.permutation(homes)
  birth = {}
  for p, c in zip(people, homes):
    birth[p] = int(rng.integers(1900, 1986))
    facts.append(Fact(p, "born_in", cities[c]))
    facts.append(Fact(p, "birth_year", str(birth[p])))
  couples = int(cfg.married_fraction * cfg.num_people) // 2
  order = rng.permutation(cfg.num_people)
  for k in range(couples):
    a, b = people[order[2 * k]], people[order[2 * k + 1]]
    facts.append(_canonical(Fact(a, "married_to", b)))
  # Directors: the first ceil(films / 2) of a permutation, two films each at
  # most, so a director's document stays short.
  directors = rng.permutation(cfg.num_people)[:(cfg.num_films + 1) // 2]
  for i, film in enumerate(films):
    d = people[directors[i % len(directors)]]
    facts.append(Fact(film, "directed", d))
    year = min(birth[d] + int(rng.integers(25, 61)), 2024)
    facts.append(Fact(film, "released_year", str(year)))
  founders = rng.permutation(cfg.num_people)[:cfg.num_companies]
  for company, f in zip(companies, founders):
    facts.append(Fact(company, "founded", people[f]))
    facts.append(Fact(company, "headquartered_in",
                      cities[int(rng.integers(cfg.num_cities))]))
  facts.sort()

  internal = set()
  irng = np.random.default_rng([cfg.seed, 2])
  for relation in RELATIONS:
    group = [f for f in facts if f.relation == relation]
    keep = int(round(cfg.internal_fraction * len(group)))
    for j in irng.permutation(len(group))[:keep]:
      internal.add(group[j])
  return World(config=cfg, people=people, films=films, companies=companies,
               cities=cities, facts=tuple(facts), internal=frozenset(internal))


# -- templates ----------------------------------------------------------------

# The corpus sentence of each fact (one fact per sentence: the rule-based
# memorization rewriter of R1-Searcher++ copies whole document sentences).
_DOC_SENTENCES = {
    "born_in": "{s} was born in the city of {o}.",
    "birth_year": "{s} was born in the year {o}.",
    "married_to": "{s} is married to {o}.",
    "directed": "{s} was directed by {o}.",
    "directed_inverse": "{o} directed the film {s}.",
    "released_year": "{s} was released in the year {o}.",
    "founded": "{s} was founded by {o}.",
    "founded_inverse": "{o} founded the company {s}.",
    "headquartered_in": "{s} is headquartered in the city of {o}.",
}

# Pretraining paraphrases, {s} = subject, {o} = object of the stored fact.
_PRETRAIN_TEMPLATES = {
    "born_in": ("{s} was born in {o}.", "{o} is the birthplace of {s}.",
                "{s} was born in the city of {o}.",
                "The city of {o} is where {s} was born."),
    "birth_year": ("{s} was born in {o}.", "{s} was born in the year {o}.",
                   "In {o}, {s} was born.", "The birth year of {s} is {o}."),
    "married_to": ("{s} is married to {o}.", "{o} is married to {s}.",
                   "{s} and {o} are married.", "The spouse of {s} is {o}.",
                   "The spouse of {o} is {s}."),
    "directed": ("{s} was directed by {o}.", "{o} directed the film {s}.",
                 "The director of {s} is {o}.",
                 "{o} is the director of the film {s}."),
    "released_year": ("{s} was released in {o}.",
                      "The film {s} came out in {o}.",
                      "In {o}, the film {s} was released.",
                      "{s} was released in the year {o}."),
    "founded": ("{s} was founded by {o}.", "{o} founded the company {s}.",
                "The founder of {s} is {o}.",
                "{o} is the founder of the company {s}."),
    "headquartered_in": ("{s} is headquartered in {o}.",
                         "{o} is home to the headquarters of {s}.",
                         "The company {s} is based in {o}.",
                         "{s} is headquartered in the city of {o}."),
}

# What the scripted agent says it needs, and the relation words of its query,
# per hop (`founder_of`: person -> the company they founded).
_NEED = {
    "born_in": "I need the city where {x} was born.",
    "birth_year": "I need the year {x} was born.",
    "married_to": "I need the spouse of {x}.",
    "directed": "I need the director of {x}.",
    "released_year": "I need the year {x} was released.",
    "founded": "I need the founder of {x}.",
    "founder_of": "I need the company founded by {x}.",
    "headquartered_in": "I need the city where {x} is headquartered.",
}
_QUERY = {
    "born_in": "{x} born city",
    "birth_year": "{x} born year",
    "married_to": "{x} married to",
    "directed": "{x} directed by",
    "released_year": "{x} released year",
    "founded": "{x} founded by",
    "founder_of": "{x} founded company",
    "headquartered_in": "{x} headquartered city",
}

# Questions. Keys: a 1-hop relation, a 2-hop chain "r1>r2", or a comparison.
_QUESTION_TEMPLATES = {
    "born_in": ("Where was {x} born?", "In which city was {x} born?"),
    "birth_year": ("In what year was {x} born?", "When was {x} born?"),
    "married_to": ("Who is {x} married to?", "Who is the spouse of {x}?"),
    "directed": ("Who directed {x}?", "Who was the director of the film {x}?"),
    "released_year": ("In what year was {x} released?",
                      "When was the film {x} released?"),
    "founded": ("Who founded {x}?", "Who was the founder of the company {x}?"),
    "headquartered_in": ("Where is {x} headquartered?",
                         "In which city is the company {x} based?"),
    "directed>born_in": ("In which city was the director of {x} born?",
                         "Where was the director of the film {x} born?"),
    "directed>birth_year": ("In what year was the director of {x} born?",
                            "When was the director of the film {x} born?"),
    "directed>married_to": ("Who is the spouse of the director of {x}?",
                            "Who is married to the director of the film {x}?"),
    "founded>born_in": ("Where was the founder of {x} born?",
                        "In which city was the founder of the company {x} born?"),
    "founded>birth_year": ("In what year was the founder of {x} born?",
                           "When was the founder of the company {x} born?"),
    "founded>married_to": ("Who is the spouse of the founder of {x}?",
                           "Who is married to the founder of the company {x}?"),
    "married_to>born_in": ("Where was the spouse of {x} born?",
                           "In which city was the spouse of {x} born?"),
    "married_to>birth_year": ("In what year was the spouse of {x} born?",
                              "When was the spouse of {x} born?"),
    "founder_of>headquartered_in": (
        "Where is the company founded by {x} headquartered?",
        "In which city is the company founded by {x} based?"),
    "born_first": ("Who was born first, {a} or {b}?",
                   "Who was born earlier, {a} or {b}?"),
    "born_later": ("Who was born later, {a} or {b}?",),
    "released_first": ("Which film was released first, {a} or {b}?",
                       "Which film came out earlier, {a} or {b}?"),
    "released_later": ("Which film was released later, {a} or {b}?",),
}

_CHAINS = {  # first hop's subject kind -> the 2-hop chains starting there
    "film": (("directed", "born_in"), ("directed", "birth_year"),
             ("directed", "married_to")),
    "company": (("founded", "born_in"), ("founded", "birth_year"),
                ("founded", "married_to")),
    "person": (("married_to", "born_in"), ("married_to", "birth_year"),
               ("founder_of", "headquartered_in")),
}
_ONE_HOP = {"person": ("born_in", "birth_year", "married_to"),
            "film": ("directed", "released_year"),
            "company": ("founded", "headquartered_in")}


# -- questions ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Question:
  """A question about the world with its gold answer and labels.

  Attributes:
    id: unique within the world ("1hop-12", "2hop-3", "comparison-40").
    question: the text.
    answers: the gold answers (one name or year).
    hops: 1 or 2 (a comparison needs two lookups: 2).
    kind: "1hop" | "2hop" | "comparison".
    internal: every fact in `facts` is internal knowledge.
    facts: the facts used, in reasoning order.
    entities: people, films and companies involved (named, bridge, answer).
    corpus: the corpus its searches read: "" the world's own, else a key of
      a copy's retriever (`retrieval.RoutedRetriever`; RL questions from the
      renamed copies, data.rl_renamed_worlds).
  """

  id: str
  question: str
  answers: tuple[str, ...]
  hops: int
  kind: str
  internal: bool
  facts: tuple[Fact, ...]
  entities: tuple[str, ...]
  corpus: str = ""

  @property
  def idx(self) -> str:
    return self.id

  def to_json(self) -> dict[str, Any]:
    """The row in R1-Searcher's format plus the labels."""
    return {"idx": self.id, "question": self.question,
            "answer": self.answers[0] if len(self.answers) == 1 else list(self.answers),
            "kind": self.kind, "hops": self.hops, "internal": self.internal,
            "facts": [[f.subject, f.relation, f.object] for f in self.facts],
            "entities": list(self.entities)}


@dataclasses.dataclass(frozen=True)
class _Hop:
  """One lookup: from `start`, follow `relation` (or founder_of) to `target`."""

  start: str
  relation: str
  target: str
  fact: Fact


def _hop(world: World, start: str, relation: str) -> _Hop | None:
  if relation == "founder_of":
    company = world.founded_by(start)
    if company is None:
      return None
    return _Hop(start, relation, company, world.fact(company, "founded"))
  target = world.value(start, relation)
  if target is None:
    return None
  return _Hop(start, relation, target, world.fact(start, relation))


def _entities(world: World, names: Iterable[str]) -> tuple[str, ...]:
  out = []
  for n in names:
    if world._kinds.get(n) in ("person", "film", "company") and n not in out:
      out.append(n)
  return tuple(out)


def _all_questions(world: World) -> list[Question]:
  rng = np.random.default_rng([world.config.seed, 3])
  out: list[Question] = []
  count = {k: 0 for k in KINDS}

  def add(kind, key, fmt, answer, hops):
    template = _QUESTION_TEMPLATES[key]
    text = template[int(rng.integers(len(template)))].format(**fmt)
    facts = tuple(h.fact for h in hops)
    names = [h.start for h in hops] + [h.target for h in hops]
    out.append(Question(
        id=f"{kind}-{count[kind]}", question=text, answers=(answer,),
        hops=1 if kind == "1hop" else 2, kind=kind,
        internal=all(world.is_internal(f) for f in facts), facts=facts,
        entities=_entities(world, names)))
    count[kind] += 1

  groups = (("person", world.people), ("film", world.films),
            ("company", world.companies))
  for kind, names in groups:
    for x in names:
      for r in _ONE_HOP[kind]:
        h = _hop(world, x, r)
        if h is not None:
          add("1hop", r, {"x": x}, h.target, [h])
  for kind, names in groups:
    for x in names:
      for r1, r2 in _CHAINS[kind]:
        h1 = _hop(world, x, r1)
        h2 = _hop(world, h1.target, r2) if h1 is not None else None
        if h2 is not None:
          add("2hop", f"{r1}>{r2}", {"x": x}, h2.target, [h1, h2])
  for names, relation, word in ((world.people, "birth_year", "born"),
                                (world.films, "released_year", "released")):
    for a, b in itertools.combinations(names, 2):
      ha, hb = _hop(world, a, relation), _hop(world, b, relation)
      if ha.target == hb.target:
        continue  # Same year: no answer.
      if rng.random() < 0.5:
        a, b, ha, hb = b, a, hb, ha
      later = rng.random() < 0.25
      earlier = a if int(ha.target) < int(hb.target) else b
      answer = (b if earlier == a else a) if later else earlier
      add("comparison", f"{word}_{'later' if later else 'first'}",
          {"a": a, "b": b}, answer, [ha, hb])
  return out


# -- splits -------------------------------------------------------------------


def heldout_entity_group(world: World, seed: int, fraction: float) -> frozenset[str]:
  """People drawn until `fraction` of them is held out, closed under marriage,
  with the films they directed and the companies they founded."""
  rng = np.random.default_rng([seed, 4])
  target = int(round(fraction * len(world.people)))
  held: set[str] = set()
  for i in rng.permutation(len(world.people)):
    if len(held) >= target:
      break
    p = world.people[i]
    held.add(p)
    spouse = world.value(p, "married_to")
    if spouse is not None:
      held.add(spouse)
  for f in world.facts:
    if f.relation in ("directed", "founded") and f.object in held:
      held.add(f.subject)
  return frozenset(held)


def _balanced(questions: list[Question], rng: np.random.Generator,
              max_ratio: float, comparisons: int) -> list[Question]:
  """Per kind, internal vs corpus-only at most max_ratio : 1."""
  out = []
  for kind in KINDS:
    strata = [[q for q in questions if q.kind == kind and q.internal == b]
              for b in (True, False)]
    strata = [[s[i] for i in rng.permutation(len(s))] for s in strata]
    smaller = min(len(s) for s in strata)
    cap = int(np.ceil(max_ratio * max(smaller, 1)))
    if kind == "comparison":
      cap = min(cap, (comparisons + 1) // 2)
    for s in strata:
      out += s[:cap]
  return out


def make_splits(world: World, seed: int = 0, *, heldout_fraction: float = 0.25,
                entity_fraction: float = 0.2, max_ratio: float = 2.0,
                comparisons: int | None = None) -> dict[str, list[Question]]:
  """Disjoint "train", "heldout" and "heldout_entities" question sets.

  Args:
    world: the world.
    seed: which entities and questions are held out.
    heldout_fraction: share of the non-held-out entities' questions (per
      kind and internal label) that goes to "heldout".
    entity_fraction: share of people (with spouses, films, companies) whose
      questions form "heldout_entities" and appear nowhere else.
    max_ratio: within a kind, the larger of internal / corpus-only is at most
      this many times the smaller (questions beyond are dropped).
    comparisons: comparison questions per group of entities; default the
      number of 2-hop questions kept in that group.

  Returns:
    {"train", "heldout", "heldout_entities"} -> questions, interleaved so
    that any prefix mixes the kinds and labels in the split's proportions.
  """
  if not 0 <= heldout_fraction < 1 or not 0 <= entity_fraction < 1:
    raise ValueError(f"make_splits: heldout_fraction={heldout_fraction} and "
                     f"entity_fraction={entity_fraction} should be in [0, 1)")
  if max_ratio < 1:
    raise ValueError(f"make_splits: max_ratio={max_ratio} should be >= 1")
  rng = np.random.default_rng([seed, 5])
  held = heldout_entity_group(world, seed, entity_fraction)
  candidates = world.questions()
  seen = [q for q in candidates if not held.intersection(q.entities)]
  unseen = [q for q in candidates if held.issuperset(q.entities)]

  def pick(group):
    n_comp = comparisons
    if n_comp is None:
      two_hop = _balanced([q for q in group if q.kind == "2hop"], rng,
                          max_ratio, 0)
      n_comp = len(two_hop)
    return _balanced(group, rng, max_ratio, n_comp)

  seen, unseen = pick(seen), pick(unseen)
  train, heldout = [], []
  for kind in KINDS:
    for b in (True, False):
      s = [q for q in seen if q.kind == kind and q.internal == b]
      n = int(round(heldout_fraction * len(s)))
      heldout += s[:n]
      train += s[n:]
  # A held-out question over an entity no training question involves would
  # test unseen entities: it moves to train.
  covered = {e for q in train for e in q.entities}
  moved = [q for q in heldout if not covered.issuperset(q.entities)]
  heldout = [q for q in heldout if covered.issuperset(q.entities)]
  train += moved

  return {"train": _interleave(train, rng), "heldout": _interleave(heldout, rng),
          "heldout_entities": _interleave(unseen, rng)}


def _interleave(questions: list[Question], rng: np.random.Generator
                ) -> list[Question]:
  """Shuffled within each (kind, internal) stratum, then merged so that every
  prefix has about the strata's proportions (an evaluation may take the
  first N)."""
  placed = []
  for s, (kind, b) in enumerate(itertools.product(KINDS, (True, False))):
    group = [q for q in questions if q.kind == kind and q.internal == b]
    for j, i in enumerate(rng.permutation(len(group))):
      placed.append(((j + 0.5) / len(group), s, group[i]))
  return [q for _, _, q in sorted(placed, key=lambda t: t[:2])]


def sft_questions(questions: Sequence[Question], n: int, *,
                  one_hop_only: bool = True, seed: int = 0) -> list[Question]:
  """`n` questions for the cold start, half internal and half corpus-only
  where possible (and, unless `one_hop_only`, spread over the kinds)."""
  pool = [q for q in questions if q.kind == "1hop" or not one_hop_only]
  if n > len(pool):
    raise ValueError(f"sft_questions: n={n} but only {len(pool)} "
                     f"{'1-hop ' if one_hop_only else ''}questions are given")
  rng = np.random.default_rng([seed, 6])
  strata = {}
  for q in pool:
    strata.setdefault((q.kind, q.internal), []).append(q)
  queues = [[s[i] for i in rng.permutation(len(s))]
            for _, s in sorted(strata.items())]
  out = []
  while len(out) < n:  # Round-robin over the strata until n are taken.
    for queue in queues:
      if queue and len(out) < n:
        out.append(queue.pop())
  return out


# -- JSONL ----------------------------------------------------------------------


def write_jsonl(questions: Iterable[Question], path: PathLike) -> None:
  """One JSON object per line: idx, question, answer, kind, hops, internal,
  facts ([subject, relation, object] lists), entities."""
  with open(path, "w", encoding="utf-8") as f:
    for q in questions:
      f.write(json.dumps(q.to_json(), ensure_ascii=False) + "\n")


def read_jsonl(path: PathLike) -> list[Question]:
  """Reads `write_jsonl`'s files; errors name file:line and the field."""
  return [_question_from_row(ex.idx, ex.question, ex.answers, ex.extra, where)
          for where, ex in iter_qa_rows(path)]


def question_from_example(example, where: str) -> Question:
  """A `write_jsonl` row read back as a QAExample (e.g. from the seqio Task
  of `data._tasks.register_synthetic_task`) -> the Question it was; errors
  name `where` and the field."""
  return _question_from_row(example.idx, example.question, example.answers,
                            example.extra, where)


def _question_from_row(idx, question, answers, extra, where) -> Question:
  def field(name, types, check=lambda v: True, what=""):
    if name not in extra:
      raise ValueError(f"{where}: missing field {name!r}")
    v = extra[name]
    if not isinstance(v, types) or not check(v):
      raise ValueError(f"{where}: field {name!r} should be {what}, got {v!r}")
    return v
  kind = field("kind", str, lambda v: v in KINDS, f"one of {KINDS}")
  hops = field("hops", int, lambda v: v in (1, 2) and not isinstance(v, bool),
               "1 or 2")
  internal = field("internal", bool, what="true or false")
  facts = field("facts", list, lambda v: all(
      isinstance(f, list) and len(f) == 3 and all(isinstance(x, str) for x in f)
      for f in v), "a list of [subject, relation, object] strings")
  entities = field("entities", list,
                   lambda v: all(isinstance(x, str) for x in v),
                   "a list of strings")
  return Question(id=idx, question=question, answers=tuple(answers), hops=hops,
                  kind=kind, internal=internal,
                  facts=tuple(Fact(*f) for f in facts), entities=tuple(entities))


# -- prompts and the scripted agent ---------------------------------------------

_PROMPTS = {
    "r1": ("Answer the question. Think inside <think> </think>. To search, "
           "write <|begin_of_query|> keywords <|end_of_query|>; results come "
           "inside <|begin_of_documents|> <|end_of_documents|>. Give the answer "
           "inside <answer> </answer>.\nQuestion: {q}\n<think>"),
    "r1pp": ("Answer the question. Think inside <think> </think>. Recall what "
             "you know inside <internal> </internal>. To search, write "
             "<external> keywords </external>; results come inside <document> "
             "</document>. Give the answer inside <answer> </answer>.\n"
             "Question: {q}\n<think>"),
}


def _check_style(style: str) -> None:
  if style not in STYLES:
    raise ValueError(f"style={style!r}: expected one of {STYLES}")


def prompt(question: Question | str, style: str) -> str:
  """The instruction and question; ends with an opened `<think>`, which the
  completion (e.g. `scripted_trajectory`) continues."""
  _check_style(style)
  text = question.question if isinstance(question, Question) else question
  return _PROMPTS[style].format(q=text)


def _hops_of(question: Question, world: World) -> list[_Hop]:
  """The question's lookups, recovered from its facts and entities."""
  hops = []
  if question.kind == "comparison":
    for f in question.facts:
      hops.append(_Hop(f.subject, f.relation, f.object, f))
    return hops
  start = question.entities[0]
  for f in question.facts:
    if f.relation == "founded" and f.object == start:
      hops.append(_Hop(start, "founder_of", f.subject, f))
    elif f.relation == "married_to":
      other = f.object if f.subject == start else f.subject
      hops.append(_Hop(start, "married_to", other, f))
    else:
      hops.append(_Hop(start, f.relation, f.object, f))
    start = hops[-1].target
  return hops


def contradicts_internal(question: Question, asked_in: World,
                         world: World) -> bool:
  """Whether answering `question` of `asked_in` (a renamed copy of `world`)
  states about a name another value than an internal fact of `world` gives:
  a cold start trained on it unlearns that fact ("Where was X born?" has
  another answer in the renamed world, and the pretraining text said where).
  """
  for hop in _hops_of(question, asked_in):
    real = _hop(world, hop.start, hop.relation)
    if (real is not None and real.target != hop.target
        and world.is_internal(real.fact)):
      return True
  return False


# The first hop's phrase in a chained question, before its named entity.
_FIRST_HOP = (r"the (?:director of (?:the film )?|founder of (?:the company )?"
              r"|spouse of |company founded by )")


def reduced_question(question: Question, bridge: str) -> str:
  """A chained question with its first hop answered: the phrase naming the
  bridge ("the director of the film F") replaced by the bridge's name, which
  leaves a 1-hop question ("Where was the director of F born?" -> "Where was
  X born?")."""
  if question.kind != "2hop":
    raise ValueError(f"question {question.id}: only a chained (2hop) question "
                     "has a first hop to replace")
  named = re.escape(question.entities[0])
  m = re.search(_FIRST_HOP + named, question.question)
  if m is None:
    raise ValueError(f"question {question.id}: no first-hop phrase before "
                     f"{question.entities[0]!r} in {question.question!r}")
  return question.question[:m.start()] + bridge + question.question[m.end():]


def scripted_trajectory(question: Question, world: World, style: str,
                        search: Callable[[str], str], *,
                        search_all: bool = False,
                        restate: str = "none",
                        premature: bool = False,
                        compare: str = "two_searches",
                        ) -> list[tuple[str, bool]]:
  """A scripted completion of `prompt(question, style)`, as segments.

  Args:
    question: a question of `world`.
    world: the world (the agent knows which facts are internal).
    style: "r1" (R1-Searcher tags; an internal fact is stated in the
      reasoning) or "r1pp" (R1-Searcher++: recalled in `<internal>` tags).
    search: query -> the exact document block (with its tags) the sampler
      would splice after the query.
    search_all: search every fact, internal ones too (an imperfect agent).
    restate: one of `RESTATE_MODES`.
      "none": the agent goes from one hop to the next without restating.
      "chained": on a chained question, after the first hop the agent writes
        the question that remains, with the first hop's phrase replaced by
        its answer ("\\nQuestion: Who is the spouse of X?\\n",
        `reduced_question`), then answers that 1-hop question as a 1-hop
        trajectory would.
      "every_hop": after every hop of every question the agent writes the
        question that remains (a 1-hop or comparison question: the question
        itself; a chained one: `reduced_question`), then goes on to the next
        hop or the answer. Each choice between searching again and
        answering is then taken right after a question, not ~150 tokens of
        documents away from the prompt's.
    premature: on a chained question, the agent answers after the first hop
      with the bridge it found (a wrong answer): the imperfect agent that
      stops one hop short.
    compare: one of `COMPARE_MODES`, how a comparison whose two facts are
      both searched is looked up.
      "two_searches": one hop after the other, as any question.
      "one_search": the agent writes the question ("I need the years. Who
        was born first, A or B?"), one query naming both ("A or B born
        year"), whose block holds both documents, states both facts, then
        compares the years in the question's direction ("1952 is before
        1960." for "first", "1960 is after 1952." for "later") and
        answers. Falls back to two searches when the block misses a year.

  Returns:
    [(text, is_retrieved), ...]: the agent's own text (False) alternating
    with the blocks `search` returned (True), verbatim.

  Raises:
    ValueError: unknown style, or a search whose block (after a retry with
      the bare entity name) does not contain the fact's object.
  """
  _check_style(style)
  tags = METHOD_TAGS[style]
  segments: list[tuple[str, bool]] = []
  text: list[str] = []

  def flush():
    if text:
      segments.append(("".join(text), False))
      text.clear()

  if restate not in RESTATE_MODES:
    raise ValueError(f"restate={restate!r} is not one of "
                     f"{', '.join(map(repr, RESTATE_MODES))}")
  if compare not in COMPARE_MODES:
    raise ValueError(f"compare={compare!r} is not one of "
                     f"{', '.join(map(repr, COMPARE_MODES))}")
  hops = _hops_of(question, world)
  answer = question.answers[0]
  if premature and question.kind == "2hop":
    hops, answer = hops[:1], hops[0].target
  # What remains after a hop: a chained question's first hop answered
  # leaves a 1-hop question; otherwise the question itself.
  remaining = (reduced_question(question, hops[0].target)
               if len(hops) == 2 and question.kind == "2hop"
               else question.question)

  def say(words: str):
    """Appends `words`, without its leading space right after a restated
    question's new line."""
    if words.startswith(" ") and text and text[-1].endswith("\n"):
      words = words[1:]
    text.append(words)

  def search_hop(hop, sentence: str):
    """The query (retried with the bare entity name when the block misses
    the fact), the block, then the fact as the documents give it."""
    for attempt, query in enumerate((_QUERY[hop.relation].format(x=hop.start),
                                     hop.start)):
      if attempt:
        say(" ")
      say(f"{tags.query_begin}{query}{tags.query_end}")
      flush()
      block = search(query)
      segments.append((block, True))
      if hop.target in block:
        break
    else:
      raise ValueError(f"question {question.id}: the search for {query!r} did "
                       f"not return {hop.target!r}")
    say(" " + sentence)

  if (question.kind == "comparison" and compare == "one_search"
      and (search_all or not any(world.is_internal(h.fact) for h in hops))):
    done = _compare_in_one_search(question, world, tags, hops, search)
    if done is not None:
      return done
  for i, hop in enumerate(hops):
    say(("" if i == 0 else " ") + _NEED[hop.relation].format(x=hop.start) + " ")
    sentence = world.sentence(hop.fact, about=hop.start)
    if world.is_internal(hop.fact) and not search_all:
      say(sentence if style == "r1" else
          f"{INTERNAL_BEGIN}{sentence}{INTERNAL_END}")
    else:
      search_hop(hop, sentence)
    if restate == "every_hop" or (restate == "chained" and i + 1 < len(hops)
                                  and question.kind == "2hop"):
      say(f"\nQuestion: {remaining}\n")
  if question.kind == "comparison":
    # The years in order first, then the name: one step at a time.
    years = sorted(int(f.object) for f in question.facts)
    say(f" {years[0]} is before {years[1]}.")
  say(f" So the answer is {answer}.{THINK_END}\n"
      f"{ANSWER_BEGIN}{answer}{ANSWER_END}")
  flush()
  return segments


def _compare_in_one_search(question: Question, world: World, tags, hops,
                           search: Callable[[str], str]
                           ) -> list[tuple[str, bool]] | None:
  """`scripted_trajectory`'s compare="one_search": both facts from one
  query, or None when its block misses either."""
  a, b = hops
  # The question's own words where it names the two ("A or B"): the name
  # after "or" is copied by matching what preceded it, which a tiny model
  # does (after "A and" it wrote A again).
  query = _QUERY[a.relation].format(x=f"{a.start} or {b.start}")
  block = search(query)
  if a.target not in block or b.target not in block:
    return None
  facts = " ".join(world.sentence(h.fact, about=h.start) for h in hops)
  answer = question.answers[0]
  early, late = sorted((int(a.target), int(b.target)))
  # The answer's year first: the comparison says which year it looks for.
  first = a if int(a.target) < int(b.target) else b
  order = (f"{early} is before {late}" if answer == first.start
           else f"{late} is after {early}")
  return [(f"I need the years. {question.question} "
           f"{tags.query_begin}{query}{tags.query_end}", False),
          (block, True),
          (f" {facts} {order}. So the answer is {answer}.{THINK_END}\n"
           f"{ANSWER_BEGIN}{answer}{ANSWER_END}", False)]
