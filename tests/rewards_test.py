"""Tests of rsearch_jax.rewards: metrics against R1-Searcher's published numbers,
the trace parser on hand-written and random traces, and hand-worked rewards."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsearch_jax import rewards as R

EVAL_FILES = {  # file -> (paper's ACC_R = cover-EM, ACC_L = judge), in percent
    "hotpotqa_qwen": (65.4, 75.0),
    "2wiki_qwen": (63.6, 65.0),
    "bamboogle_qwen": (52.8, 54.4),
    "hotpotqa_llama": (64.8, 74.6),
}


def _rows(shared_data, name):
  path = shared_data / "r1_searcher" / "eval_results" / f"{name}.jsonl"
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


# -- metrics -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EVAL_FILES))
def test_published_outputs_reproduce_paper_numbers(shared_data, name):
  rows = _rows(shared_data, name)
  acc_r, acc_l = EVAL_FILES[name]
  cem = 100 * sum(R.cover_exact_match(r["pred_ans"], r["answer"]) for r in rows) / len(rows)
  judge = 100 * sum(r["gpt4o_output"] == "True" for r in rows) / len(rows)
  assert round(cem, 1) == acc_r
  assert round(judge, 1) == acc_l


def _r1_server_format_ok(s: str) -> bool:
  """R1-Searcher's reward-server format check, re-stated from its code: tag
  counts of queries and document blocks all equal, no `<think>`, one
  `</think>`, `<answer>`, `</answer>`, no CJK outside document blocks."""
  counts = {s.count(t) for t in (
      "<|begin_of_documents|>\n", "<|end_of_documents|>\n\n", "<|begin_of_query|>",
      "<|end_of_query|>", "<|begin_of_documents|>", "<|end_of_documents|>",
      "<|begin_of_documents|>\n(1)")}
  think_answer = (s.count("<think>") == 0 and s.count("</think>") == 1
                  and s.count("<answer>") == 1 and s.count("</answer>") == 1)
  outside = re.sub(r"<\|begin_of_documents\|>.*?<\|end_of_documents\|>", "", s,
                   flags=re.DOTALL)
  return len(counts) == 1 and think_answer and not any(
      "\u4e00" <= ch <= "\u9fff" for ch in outside)


@pytest.mark.parametrize("name", sorted(EVAL_FILES))
def test_parser_on_published_traces(shared_data, name):
  rows = _rows(shared_data, name)
  traces = [R.parse_trace(r["gen_text_store"], R.R1_TAGS) for r in rows]
  # The parsed answer is the pred_ans R1-Searcher's evaluation extracted
  # (one bamboogle row's pred_ans differs from its own trace).
  mismatched = sum(t.answer != r["pred_ans"].strip() for t, r in zip(traces, rows))
  assert mismatched <= 1
  # Well-formedness agrees with R1-Searcher's own check on every trace.
  assert [t.well_formed for t in traces] == [
      _r1_server_format_ok(r["gen_text_store"]) for r in rows]
  # Queries and document blocks counted independently.
  for t, r in zip(traces, rows):
    s = r["gen_text_store"]
    assert t.num_retrievals == s.count("<|begin_of_documents|>")
    assert len(t.queries) == s.count("<|end_of_query|>")
  # Accuracy of the parsed (stripped) answers: the paper's 65.4 on hotpotqa_qwen
  # but for one " False " that R1-Searcher's exact "False" -> "no" mapping
  # misses unstripped (65.6 here).
  golds = [r["answer"] for r in rows]
  expected = sum(R.cover_exact_match(r["pred_ans"].strip(), r["answer"])
                 for r in rows) / len(rows)
  assert R.accuracy(traces, golds) == pytest.approx(expected)
  if name == "hotpotqa_qwen":
    assert expected == pytest.approx(0.656)


def test_exact_match_and_f1_by_hand():
  assert R.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
  assert R.exact_match("Eiffel", "eiffel tower") == 0.0
  # Punctuation becomes a space (R1-Searcher), so "U.S." is two tokens.
  assert R.normalize_answer("The U.S. Army_base") == "u s army base"
  assert R.exact_match("U.S. Army", "US army") == 0.0
  # P = 1/3 ({army} of {u, s, army}), R = 1/2 -> F1 = 2PR/(P+R) = 0.4
  assert R.f1("U.S. Army", "US army") == pytest.approx(0.4)
  # P = 2/3, R = 1 -> F1 = 0.8
  assert R.f1("Nidal Malik Hasan", "Nidal Hasan") == pytest.approx(0.8)
  # HotpotQA's rule: a yes/no answer scores only against the same yes/no.
  assert R.f1("yes it is", "yes") == 0.0
  assert R.f1("no", "yes") == 0.0
  assert R.f1("True", "yes") == 1.0 and R.exact_match("False", "no") == 1.0
  assert R.f1("Hasan", ["Nidal Hasan", "Hasan"]) == 1.0  # max over aliases
  assert R.f1(None, "x") == 0.0 and R.exact_match("x", []) == 0.0


def test_cover_exact_match_by_hand():
  assert R.cover_exact_match("Nidal Malik Hasan", "Nidal Hasan") == 1.0
  assert R.cover_exact_match("Nidal Hasan", "Nidal Malik Hasan") == 0.0
  assert R.cover_exact_match("Hasan, Nidal", "nidal hasan") == 1.0  # any order
  assert R.cover_exact_match("Hasanov", "Hasan") == 0.0  # whole tokens
  assert R.cover_exact_match("Paris", ["London", "paris"]) == 1.0
  assert R.cover_exact_match("anything", "the") == 0.0  # empty gold covers nothing
  assert R.cover_exact_match("a", "the") == 1.0         # ... but an empty answer


# -- hand-written traces ---------------------------------------------------------

R1_GOOD = ("I should search. <|begin_of_query|> Fort Hood shooter<|end_of_query|>\n\n"
           "<|begin_of_documents|>\n(1) Nidal Hasan shot 13 people.\n<|end_of_documents|>\n\n"
           "So it is Nidal Hasan.</think>\n\n<answer>Nidal Malik Hasan</answer>")


def _r1_segments(text: str):
  """The sampler's view of R1_GOOD-like text: document blocks are retrieved."""
  parts = re.split(r"(<\|begin_of_documents\|>.*?<\|end_of_documents\|>\n\n)", text,
                   flags=re.DOTALL)
  return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]


def _rewards(trace, gold, names):
  return {n: R.get_reward(n).score([trace], gold)[0] for n in names}


R1_NAMES = ("retrieval", "format", "f1", "format_penalty", "em", "cover_em")


@pytest.mark.parametrize("mode", ["text", "segments"])
def test_r1_well_formed(mode):
  completion = R1_GOOD if mode == "text" else _r1_segments(R1_GOOD)
  t = R.parse_trace(completion, R.R1_TAGS)
  assert t.problems == ()
  assert t.answer == "Nidal Malik Hasan"
  assert t.queries == ("Fort Hood shooter",)
  assert t.documents == ("(1) Nidal Hasan shot 13 people.",)
  assert t.num_hallucinated_docs == 0
  assert t.think[0].endswith("So it is Nidal Hasan.")
  assert _rewards(t, "Nidal Hasan", R1_NAMES) == {
      "retrieval": 0.5, "format": 0.5, "f1": pytest.approx(0.8),
      "format_penalty": 0.0, "em": 0.0, "cover_em": 1.0}


def test_r1_malformed():
  # think never closed, the answer inside it, no search.
  t = R.parse_trace("Hmm. <answer>Nidal Hasan</answer>", R.R1_TAGS)
  assert t.answer == "Nidal Hasan"
  assert {p.split(":")[0] for p in t.problems} == {"think", "answer"}
  assert _rewards(t, "Nidal Hasan", R1_NAMES) == {
      "retrieval": 0.0, "format": 0.0, "f1": 1.0, "format_penalty": -2.0,
      "em": 1.0, "cover_em": 1.0}
  # Two answers, an unclosed query: the last complete answer counts.
  t = R.parse_trace("<|begin_of_query|>x</think><answer>a</answer><answer>b</answer>",
                    R.R1_TAGS)
  assert t.answer == "b" and t.answers == ("a", "b") and t.queries == ()
  assert t.problems_in("answer") and t.problems_in("query")
  # An answer never closed is no answer.
  t = R.parse_trace("</think><answer>Nidal", R.R1_TAGS)
  assert t.answer is None
  assert _rewards(t, "Nidal", ("f1", "format_penalty")) == {
      "f1": 0.0, "format_penalty": -2.0}
  # A query without documents: format fine, retrieval not.
  t = R.parse_trace("<|begin_of_query|>q<|end_of_query|></think><answer>a</answer>",
                    R.R1_TAGS)
  assert t.queries == ("q",) and t.num_retrievals == 0
  assert _rewards(t, "a", ("retrieval", "format")) == {"retrieval": 0.0, "format": 0.5}
  # CJK outside documents is a format problem (R1-Searcher's stage 2) ...
  t = R.parse_trace("想一想</think><answer>a</answer>", R.R1_TAGS)
  assert t.problems_in("language") and R.format_penalty(t, "a") == -2.0
  # ... inside documents it is not.
  t = R.parse_trace(R1_GOOD.replace("13 people", "13 人"), R.R1_TAGS)
  assert t.well_formed


def test_self_written_documents_text_vs_segments():
  text = ("<|begin_of_query|>q<|end_of_query|>\n<|begin_of_documents|>made up"
          "<|end_of_documents|>\n</think><answer>a</answer>")
  # Text mode (published outputs): a block right after a query was retrieved.
  t = R.parse_trace(text, R.R1_TAGS)
  assert t.num_retrievals == 1 and t.num_hallucinated_docs == 0 and t.well_formed
  # Segment mode: the model wrote it, so it is hallucinated, never retrieved.
  t = R.parse_trace([(text, False)], R.R1_TAGS)
  assert t.num_retrievals == 0 and t.num_hallucinated_docs == 1
  assert t.documents == ()
  assert _rewards(t, "a", ("retrieval", "format", "format_penalty")) == {
      "retrieval": 0.0, "format": 0.5, "format_penalty": -2.0}
  # In text mode a block not preceded by a query is hallucinated too.
  t = R.parse_trace("Look: <|begin_of_documents|>x<|end_of_documents|></think>"
                    "<answer>a</answer>", R.R1_TAGS)
  assert t.num_retrievals == 0 and t.num_hallucinated_docs == 1
  # Segment mode, retrieved block present and a self-written one after it.
  segs = [("<|begin_of_query|>q<|end_of_query|>", False),
          ("<|begin_of_documents|>\n(1) real\n<|end_of_documents|>\n\n", True),
          ("<|begin_of_documents|>fake<|end_of_documents|></think><answer>a</answer>",
           False)]
  t = R.parse_trace(segs, R.R1_TAGS)
  assert t.documents == ("(1) real",) and t.num_hallucinated_docs == 1


def _r1pp_rollout(answer: str, retrievals: int, recall: bool = True):
  segs = [("Let me think. ", False)]
  if recall:
    segs.append(("<internal>Citibank was founded in 1812.</internal> ", False))
  for i in range(retrievals):
    segs.append((f"<external>president of the US in 1812 ({i})</external>", False))
    segs.append((f"<document>\n(1) James Madison, president {i}.\n</document>\n\n", True))
  segs.append((f"Done.</think>\n<answer>{answer}</answer>", False))
  return segs


def test_r1pp_well_formed_and_malformed():
  t = R.parse_trace(_r1pp_rollout("James Madison", 1), R.R1PP_TAGS)
  assert t.problems == ()
  assert t.internal == ("Citibank was founded in 1812.",)
  assert t.queries == ("president of the US in 1812 (0)",)
  assert t.documents == ("(1) James Madison, president 0.",)
  names = ("format_penalty", "answer_cem")
  assert _rewards(t, "James Madison", names) == {"format_penalty": 0.0, "answer_cem": 1.0}
  # Covers the gold but has 11 words: the answer reward is 0.
  long = "It was James Madison, the fourth president of the United States"
  t = R.parse_trace(_r1pp_rollout(long, 0), R.R1PP_TAGS)
  assert R.cover_exact_match(t.answer, "James Madison") == 1.0
  assert _rewards(t, "James Madison", names) == {"format_penalty": 0.0, "answer_cem": 0.0}
  assert R.answer_cem_reward(t, "James Madison", max_words=11) == 1.0
  # Unclosed internal span, nested external query.
  t = R.parse_trace("<internal>Madison</think><answer>James Madison</answer>", R.R1PP_TAGS)
  assert t.problems_in("internal") and t.internal == ()
  assert _rewards(t, "James Madison", names) == {"format_penalty": -2.0, "answer_cem": 1.0}
  t = R.parse_trace("<external>a <external>b</external></think><answer>x</answer>",
                    R.R1PP_TAGS)
  assert t.queries == ("b",) and t.problems_in("query")
  # R1-Searcher's tags mean nothing to R1-Searcher++: plain text.
  t = R.parse_trace(R1_GOOD, R.R1PP_TAGS)
  assert t.queries == () and t.well_formed


def test_tagset_validation():
  with pytest.raises(ValueError, match="used twice"):
    R.TagSet(think=("<t>", "</t>"), answer=("<a>", "</a>"), query=("<q>", "</q>"),
             documents=("</q>", "</d>"))
  with pytest.raises(ValueError, match="non-empty"):
    R.TagSet(think=("<t>", ""), answer=("<a>", "</a>"), query=("<q>", "</q>"),
             documents=("<d>", "</d>"))
  with pytest.raises(TypeError, match="segment 1"):
    R.parse_trace([("a", False), "b"], R.R1_TAGS)


# -- group reward and score_group ------------------------------------------------


def test_group_fewest_retrievals_by_hand():
  gold = "James Madison"
  # correct with 0, 2, 1 retrievals, wrong with 0.
  group = [_r1pp_rollout("James Madison", 0), _r1pp_rollout("Madison, James", 2),
           _r1pp_rollout("President James Madison", 1), _r1pp_rollout("Monroe", 0)]
  traces = [R.parse_trace(c, R.R1PP_TAGS) for c in group]
  # counts [0, 2, 1]: mean 1, variance (1 + 1 + 0) / 3 = 2/3, 2 * var = 4/3 < 2.
  assert R.group_fewest_retrievals(traces, gold) == pytest.approx([4 / 3, 0, 0, 0])
  assert R.get_reward("group_fewest_retrievals:cap=1").score(traces, gold) == [1, 0, 0, 0]
  assert R.get_reward("group_fewest_retrievals", scale=1.0).score(traces, gold) == \
      pytest.approx([2 / 3, 0, 0, 0])
  # counts [0, 0, 3, 3]: variance 2.25, 2 * 2.25 = 4.5 capped at 2; ties share it.
  traces = [R.parse_trace(_r1pp_rollout("James Madison", n), R.R1PP_TAGS)
            for n in (0, 3, 0, 3)]
  assert R.group_fewest_retrievals(traces, gold) == [2.0, 0.0, 2.0, 0.0]
  # Same count everywhere, or a single correct rollout: no spread, no bonus.
  same = [R.parse_trace(_r1pp_rollout("James Madison", 1), R.R1PP_TAGS)] * 3
  assert R.group_fewest_retrievals(same, gold) == [0.0] * 3
  assert R.group_fewest_retrievals(traces[:1], gold) == [0.0]
  assert R.group_fewest_retrievals([], gold) == []

  total, parts = R.score_group(group, [gold], R.R1PP_TAGS,
                               ("format_penalty", "answer_cem", "group_fewest_retrievals"))
  assert parts["answer_cem"] == [1.0, 1.0, 1.0, 0.0]
  assert parts["format_penalty"] == [0.0] * 4
  assert total == pytest.approx([1 + 4 / 3, 1.0, 1.0, 0.0])


def test_score_group_r1_and_registry():
  group = [R1_GOOD, _r1_segments(R1_GOOD), "no tags at all"]
  total, parts = R.score_group(group, "Nidal Hasan", R.R1_TAGS, ("retrieval", "format"))
  assert parts == {"retrieval": [0.5, 0.5, 0.0], "format": [0.5, 0.5, 0.0]}
  assert total == [1.0, 1.0, 0.0]
  total, parts = R.score_group(group, "Nidal Hasan", R.R1_TAGS,
                               ("f1", "format_penalty:penalty=1"))
  assert total == pytest.approx([0.8, 0.8, -1.0])
  assert list(parts) == ["f1", "format_penalty"]

  def has_answer(trace, gold):
    return float(trace.answer is not None)

  total, parts = R.score_group(group, "x", R.R1_TAGS, [has_answer])
  assert parts == {"has_answer": [1.0, 1.0, 0.0]}
  with pytest.raises(ValueError, match="unknown reward 'nope'"):
    R.get_reward("nope")
  with pytest.raises(ValueError, match="unknown parameter"):
    R.get_reward("format", penalty=3)
  with pytest.raises(ValueError, match="key=value"):
    R.get_reward("format:0.5")
  with pytest.raises(ValueError, match="listed twice"):
    R.score_group(group, "x", R.R1_TAGS, ("f1", "f1"))
  with pytest.raises(ValueError, match="non-finite"):
    R.score_group(group, "x", R.R1_TAGS, [lambda t, g: math.nan])
  traces = [R.parse_trace(c, R.R1_TAGS) for c in group]
  assert [R.is_correct(t, "Nidal Hasan") for t in traces] == [True, True, False]
  assert not R.is_correct(traces[0], "Nidal Hasan", metric="em")
  assert R.accuracy(traces, ["Nidal Hasan"] * 3) == pytest.approx(2 / 3)


# -- random tag soup -------------------------------------------------------------


def _soup(tags: R.TagSet):
  tag_strings = [t for _, pair in tags.pairs() for t in pair]
  pieces = st.one_of(
      st.sampled_from(tag_strings),
      st.sampled_from(["word", "Madison", " ", "\n\n", "(1)", "想", "<", "</",
                       "<|begin_of", "_of_query|>", "yes", "the"]),
      st.text(max_size=6))
  return st.lists(pieces, max_size=40).map("".join)


def _check_trace(t: R.Trace, retrieved_segments: int | None):
  assert t.answer is None or isinstance(t.answer, str)
  assert t.well_formed == (t.problems == ())
  assert t.num_hallucinated_docs >= 0
  if retrieved_segments is not None:  # every inserted block, and only those
    assert t.num_retrievals == retrieved_segments
  golds = ["James Madison", ["yes", "Madison"]]
  for name in R.REWARDS:
    for gold in golds:
      for v in R.get_reward(name).score([t, t], gold):
        assert isinstance(v, float) and math.isfinite(v)


_FUZZ = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("tags", [R.R1_TAGS, R.R1PP_TAGS], ids=["r1", "r1pp"])
def test_fuzz_text_mode(tags):
  @_FUZZ
  @given(_soup(tags))
  def run(text):
    _check_trace(R.parse_trace(text, tags), None)

  run()


@pytest.mark.parametrize("tags", [R.R1_TAGS, R.R1PP_TAGS], ids=["r1", "r1pp"])
def test_fuzz_segment_mode(tags):
  @_FUZZ
  @given(st.lists(st.tuples(_soup(tags), st.booleans()), max_size=8))
  def run(segments):
    t = R.parse_trace(segments, tags)
    _check_trace(t, sum(r for _, r in segments))
    assert t.num_retrievals == len(t.documents)
    total, parts = R.score_group([segments, segments], ["Madison"], tags, tuple(R.REWARDS))
    assert all(math.isfinite(x) for x in total)
    assert total == pytest.approx([sum(v[i] for v in parts.values()) for i in range(2)])

  run()
