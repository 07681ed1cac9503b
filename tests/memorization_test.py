"""R1-Searcher++'s memorization: the rule-based and policy rewriters on
hand-written traces (expected rewrites written out by hand), the choice of
rollouts to memorize, and, in an RL run whose sampler returns scripted
rollouts, the `memorized` metric and the memorization batch the update gets."""

import json
import re

import jax
import numpy as np

from rsearch_jax import retrieval, rewards, testing
from rsearch_jax.data import QAExample, synthetic
from rsearch_jax.prompts import METHOD_TAGS, format_documents
from rsearch_jax.rl import (LossConfig, PolicyRewriter, RLSettings, Stage,
                            Trainer, memorization_examples,
                            rewrite_rule_based)
from rsearch_jax.rl import _train_step
from rsearch_jax.sampling import SamplerOutput

TAGS = METHOD_TAGS["r1pp"]

# Blocks as the sampler splices them: "(k)title\ntext\n" per document.
FOUNDED_BLOCK = (
    "<document>\n"
    "(1)Karik Studios\nKarik Studios was founded by Shaivaik Badrak. "
    "Karik Studios is headquartered in the city of Zaruk.\n"
    "(2)Shaivaik Badrak\nShaivaik Badrak was born in the year 1961. "
    "Shaivaik Badrak founded the company Karik Studios.\n"
    "</document>")
DIRECTED_BLOCK = (
    "<document>\n"
    "(1)Vorantel\nVorantel was directed by Dova Kelmir. "
    "Vorantel was released in the year 1974.\n"
    "(2)Dova Kelmir\nDova Kelmir was born in the city of Zaruk. "
    "Dova Kelmir directed the film Vorantel.\n"
    "</document>")
BORN_BLOCK = (
    "<document>\n"
    "(1)Dova Kelmir\nDova Kelmir was born in the city of Zaruk. "
    "Dova Kelmir was born in the year 1931. "
    "Dova Kelmir directed the film Vorantel.\n"
    "(2)Zaruk\nZaruk is a city. Dova Kelmir was born in Zaruk.\n"
    "</document>")

ONE_SEARCH = [
    ("<think>I need the founder of Karik Studios. "
     "<external>Karik Studios founded by</external>", False),
    (FOUNDED_BLOCK, True),
    (" Karik Studios was founded by Shaivaik Badrak. So the answer is "
     "Shaivaik Badrak.</think>\n<answer>Shaivaik Badrak</answer>", False),
]
# Each block's fact is the sentence sharing the most words with its query:
# never the document's title line, nor a sentence about something else.
ONE_SEARCH_REWRITTEN = (
    "<think>I need the founder of Karik Studios. "
    "<internal>Karik Studios was founded by Shaivaik Badrak.</internal>"
    " Karik Studios was founded by Shaivaik Badrak. So the answer is "
    "Shaivaik Badrak.</think>\n<answer>Shaivaik Badrak</answer>")

TWO_SEARCHES = [
    ("<think>I need the director of Vorantel. "
     "<external>Vorantel directed by</external>", False),
    (DIRECTED_BLOCK, True),
    (" Vorantel was directed by Dova Kelmir. I need the year Dova Kelmir was "
     "born. <external>Dova Kelmir born year</external>", False),
    (BORN_BLOCK, True),
    (" Dova Kelmir was born in the year 1931. So the answer is 1931.</think>\n"
     "<answer>1931</answer>", False),
]
TWO_SEARCHES_REWRITTEN = (
    "<think>I need the director of Vorantel. "
    "<internal>Vorantel was directed by Dova Kelmir.</internal>"
    " Vorantel was directed by Dova Kelmir. I need the year Dova Kelmir was "
    "born. <internal>Dova Kelmir was born in the year 1931.</internal>"
    " Dova Kelmir was born in the year 1931. So the answer is 1931.</think>\n"
    "<answer>1931</answer>")

NO_SEARCH = [
    ("<think>I need the director of Vorantel. <internal>Vorantel was directed "
     "by Dova Kelmir.</internal> So the answer is Dova Kelmir.</think>\n"
     "<answer>Dova Kelmir</answer>", False),
]

# Two blocks back to back: the second follows no query of the policy's own.
ADJACENT = [
    ("<think>I need the director of Vorantel. "
     "<external>Vorantel directed by</external>", False),
    (DIRECTED_BLOCK, True),
    (BORN_BLOCK, True),
    (" So the answer is Dova Kelmir.</think>\n<answer>Dova Kelmir</answer>",
     False),
]
# ... and the same after an earlier query of that text, which the second
# block must not be taken to answer.
ADJACENT_AFTER_TWO_QUERIES = [
    ("<think><external>Dova Kelmir born year</external> no. "
     "<external>Vorantel directed by</external>", False),
    (DIRECTED_BLOCK, True),
    (BORN_BLOCK, True),
    (" So the answer is 1931.</think>\n<answer>1931</answer>", False),
]


# -- the rule-based rewriter ----------------------------------------------------


def test_rule_based_one_retrieval():
  assert rewrite_rule_based(ONE_SEARCH, TAGS) == ONE_SEARCH_REWRITTEN


def test_rule_based_two_retrievals():
  assert rewrite_rule_based(TWO_SEARCHES, TAGS) == TWO_SEARCHES_REWRITTEN


def test_rule_based_leaves_a_trace_without_retrieval_alone():
  assert rewrite_rule_based(NO_SEARCH, TAGS) is None


def test_rule_based_refuses_a_block_unrelated_to_its_query():
  segments = [("<think><external>Karik Studios founded by</external>", False),
              (BORN_BLOCK, True),
              (" So the answer is Dova Kelmir.</think>\n<answer>Dova Kelmir"
               "</answer>", False)]
  assert rewrite_rule_based(segments, TAGS) is None


def test_rule_based_refuses_a_block_without_a_query():
  first = [(DIRECTED_BLOCK, True), (" So the answer is Dova Kelmir.", False)]
  assert rewrite_rule_based(first, TAGS) is None
  assert rewrite_rule_based(ADJACENT, TAGS) is None
  assert rewrite_rule_based(ADJACENT_AFTER_TWO_QUERIES, TAGS) is None


def test_rule_based_keeps_more_sentences_when_asked():
  # The two sentences sharing most words with the query, best first (a tie
  # in document order); a title line is never one.
  got = rewrite_rule_based(ONE_SEARCH, TAGS, max_sentences=2)
  assert got == ONE_SEARCH_REWRITTEN.replace(
      "Badrak.</internal>",
      "Badrak. Shaivaik Badrak founded the company Karik Studios.</internal>")


# -- the policy rewriter ------------------------------------------------------------


class FakeGenerate:
  """Records the prompts it is given and returns fixed completions."""

  def __init__(self, completions):
    self.completions = list(completions)
    self.prompts: list[list[str]] = []

  def __call__(self, texts):
    self.prompts.append(list(texts))
    return self.completions[:len(texts)]


def test_policy_rewriter_prompts_with_query_and_documents():
  generate = FakeGenerate([" Vorantel's director is Dova Kelmir.\nmore text",
                           "Dova Kelmir was born in 1931."])
  got = PolicyRewriter(generate)(TWO_SEARCHES, TAGS)
  # One call, one prompt per retrieval, each holding its query and its whole
  # block of documents.
  [prompts] = generate.prompts
  assert len(prompts) == 2
  for prompt, query, block in zip(prompts,
                                  ("Vorantel directed by", "Dova Kelmir born year"),
                                  (DIRECTED_BLOCK, BORN_BLOCK)):
    assert f"Query: {query}\n" in prompt
    assert block in prompt
    assert prompt.endswith("Fact:")
  # The generated fact (first line, stripped) replaces query and block.
  assert got == (
      "<think>I need the director of Vorantel. "
      "<internal>Vorantel's director is Dova Kelmir.</internal>"
      " Vorantel was directed by Dova Kelmir. I need the year Dova Kelmir was "
      "born. <internal>Dova Kelmir was born in 1931.</internal>"
      " Dova Kelmir was born in the year 1931. So the answer is 1931.</think>\n"
      "<answer>1931</answer>")


def test_policy_rewriter_without_retrieval_or_fact_rewrites_nothing():
  generate = FakeGenerate(["unused"])
  assert PolicyRewriter(generate)(NO_SEARCH, TAGS) is None
  assert generate.prompts == []  # nothing to ask the policy
  # A blank completion is no fact (the first line of a stripped completion
  # is, see test_policy_rewriter_prompts_with_query_and_documents).
  assert PolicyRewriter(FakeGenerate([" \n  "]))(ONE_SEARCH, TAGS) is None


def test_policy_rewriter_refuses_adjacent_blocks():
  for segments in (ADJACENT, ADJACENT_AFTER_TWO_QUERIES):
    generate = FakeGenerate(["a fact.", "another fact."])
    assert PolicyRewriter(generate)(segments, TAGS) is None
    assert generate.prompts == []


# -- which rollouts are memorized -----------------------------------------------------


def test_memorization_examples_pick_correct_rollouts_that_retrieved():
  prompts = ["p-correct-no-search", "p-wrong-search", "p-correct-search",
             "p-correct-two-searches", "p-correct-unrewritable"]
  segments = [NO_SEARCH, ONE_SEARCH, ONE_SEARCH, TWO_SEARCHES, ADJACENT]
  correct = [True, False, True, True, True]
  retrievals = [0, 1, 1, 2, 2]
  seen = []

  def rewrite(segs):
    seen.append(segs)
    return None if segs is ADJACENT else f"rewrite #{len(seen)}"

  got = memorization_examples(prompts, segments, correct, retrievals, rewrite)
  assert got == [("p-correct-search", "rewrite #1"),
                 ("p-correct-two-searches", "rewrite #2")]
  # Only the correct, retrieving rollouts were offered to the rewriter.
  assert seen == [ONE_SEARCH, TWO_SEARCHES, ADJACENT]
  # With the rule-based rewriter, the texts are the rewritten traces.
  rule = memorization_examples(prompts, segments, correct, retrievals,
                               lambda s: rewrite_rule_based(s, TAGS))
  assert rule == [("p-correct-search", ONE_SEARCH_REWRITTEN),
                  ("p-correct-two-searches", TWO_SEARCHES_REWRITTEN)]


def test_rule_based_recalls_each_hops_fact_in_the_synthetic_world():
  """Every question of a small world, answered by searching each hop (the
  scripted agent): each <internal> span of the rewrite is the corpus
  sentence stating that hop's fact (from either side)."""
  world = synthetic.make_world(synthetic.WorldConfig(
      num_people=20, num_films=10, num_companies=6, num_cities=6))
  bm25 = retrieval.BM25Retriever(world.corpus())

  def search(query):
    return format_documents([d.contents() for d in bm25.search([query], 3)[0]],
                            "r1pp")

  checked = 0
  for q in world.questions():
    segments = synthetic.scripted_trajectory(q, world, "r1pp", search,
                                             search_all=True)
    if sum(retrieved for _, retrieved in segments) != len(q.facts):
      continue  # a retry with the bare name: that block's query is not the hop's
    got = re.findall(r"<internal>(.*?)</internal>",
                     rewrite_rule_based(segments, TAGS))
    assert len(got) == len(q.facts), q.question
    for span, fact in zip(got, q.facts):
      assert span in (world.sentence(fact), world.sentence(fact, about=fact.object)), (
          q.question, span, fact)
    checked += 1
  assert checked > 0.9 * len(world.questions())


# -- in an RL run ---------------------------------------------------------------------
#
# The sampler is replaced by one returning scripted rollouts (hand-labelled
# correct or not), tokenized as the real sampler lays them out; everything
# else (rewards, correctness, the rewriter, the update) is the trainer's.

TOK = testing.CharTokenizer()  # lowercase text: the tags are single tokens


def _lower(segments):
  return [(text.lower(), retrieved) for text, retrieved in segments]


WRONG_SEARCH = [(t.replace("shaivaik badrak</answer>", "dova kelmir</answer>"), r)
                for t, r in _lower(ONE_SEARCH)]
NO_ANSWER = [(t.split(" so the answer")[0], r) for t, r in _lower(TWO_SEARCHES)]
# question -> its group's rollouts: (segments, memorized?) where memorized
# means answered correctly after at least one retrieval.
SCRIPT = {
    "who founded karik studios?": [
        (_lower(ONE_SEARCH), True),
        ([("<think><internal>karik studios was founded by shaivaik badrak."
           "</internal></think>\n<answer>shaivaik badrak</answer>", False)],
         False),  # correct, no retrieval
        (WRONG_SEARCH, False),
        (_lower(ONE_SEARCH), True)],
    "when was the director of vorantel born?": [
        (_lower(TWO_SEARCHES), True),
        ([(t.replace("1931</answer>", "1974</answer>"), r)
          for t, r in _lower(TWO_SEARCHES)], False),  # wrong
        ([("<think>no idea.</think>\n<answer>1974</answer>", False)], False),
        (NO_ANSWER, False)],  # cut off before answering
}
GOLD = {"who founded karik studios?": ("shaivaik badrak",),
        "when was the director of vorantel born?": ("1931",)}


def _prompt(question):
  return f"question {question}\n"  # the rollouts open <think> themselves


class ScriptedSampler:
  """Returns SCRIPT's rollouts for each prompt, in group order."""

  def __call__(self, prompts, seed=0):
    del seed
    seen = {}
    rows = []
    for p in prompts:
      k = seen[p] = seen.get(p, -1) + 1
      rows.append((TOK.encode(p), SCRIPT[p[len("question "):-1]][k][0]))
    width_p = max(len(ids) for ids, _ in rows)
    encoded = [[(TOK.encode(t), r) for t, r in segs] for _, segs in rows]
    width = width_p + max(sum(len(ids) for ids, _ in e) for e in encoded)
    b = len(rows)
    tokens = np.zeros((b, width), np.int32)
    mask = np.zeros((b, width), np.int32)
    positions = np.full((b, width), -1, np.int32)
    lengths = np.zeros(b, np.int32)
    for i, ((prompt_ids, _), pieces) in enumerate(zip(rows, encoded)):
      start = width_p - len(prompt_ids)  # prompts are left-padded
      tokens[i, start:width_p] = prompt_ids
      at = width_p
      for ids, retrieved in pieces:
        tokens[i, at:at + len(ids)] = ids
        mask[i, at:at + len(ids)] = 0 if retrieved else 1
        at += len(ids)
      positions[i, start:at] = np.arange(at - start)
      lengths[i] = at
    return SamplerOutput(
        tokens=tokens, loss_mask=mask,
        logprobs=np.where(mask, -2.0, 0.0).astype(np.float32),
        positions=positions, lengths=lengths, prompt_len=width_p,
        num_searches=np.array([sum(r for _, r in segs) for _, segs in rows],
                              np.int32),
        stop_reasons=["stop"] * b, searches=[[] for _ in rows],
        texts=["".join(t for t, _ in segs) for _, segs in rows])


def record_updates(monkeypatch) -> list:
  """Copies of the (batch, mem) each Learner.rl_step gets, in call order."""
  calls = []
  rl_step = _train_step.Learner.rl_step

  def recording_rl_step(self, batch, mem=None):
    calls.append((jax.tree.map(np.array, batch), jax.tree.map(np.array, mem)))
    return rl_step(self, batch, mem)

  monkeypatch.setattr(_train_step.Learner, "rl_step", recording_rl_step)
  return calls


def scripted_trainer(tmp_path, rl: RLSettings, *, steps: int = 1,
                     reward_names=("format_penalty", "answer_cem"),
                     learning_rate: float = 1e-4) -> Trainer:
  """An RL-only Trainer on SCRIPT's two questions, its sampler scripted."""
  questions = [QAExample(str(i), q, GOLD[q]) for i, q in enumerate(SCRIPT)]
  return Trainer(
      model=testing.tiny_model(TOK.vocab_size, layers=1),
      tokenizer=TOK, make_sampler=lambda model: ScriptedSampler(), tags=TAGS,
      reward_tags=rewards.R1PP_TAGS,
      stages=[Stage("rl", "rl", steps, "train", batch_size=len(questions),
                    rewards=tuple(reward_names), learning_rate=learning_rate)],
      datasets={"train": questions}, prompt_fn=_prompt, rl=rl,
      workdir=str(tmp_path), checkpoint_every=100, tensorboard=False)


def test_rl_run_memorizes_the_correct_rollouts_that_retrieved(tmp_path, monkeypatch):
  calls = record_updates(monkeypatch)
  steps = 2
  trainer = scripted_trainer(
      tmp_path, RLSettings(group_size=4, memorization="rule",
                           loss=LossConfig(mem_coef=0.5), fit_multiple=16),
      steps=steps, reward_names=("format_penalty", "answer_cem",
                             "group_fewest_retrievals"))
  trainer.run()
  mem_batches = [mem for _, mem in calls]

  # Counted from the script: rollouts labelled correct with a retrieval.
  want = sum(m for group in SCRIPT.values() for _, m in group)
  assert want == 3
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rows = [r for r in rows if r["stage"] == "rl"]
  assert [r["memorized"] for r in rows] == [want] * steps
  assert all(r["accuracy"] == 0.5 for r in rows)  # 4 of the 8 are right
  assert all(r["mem_nll"] > 0 for r in rows)
  # Each update's memorization batch: one row per memorized rollout, its
  # prompt unmasked, the hand-written rewrite as the only target.
  want_texts = sorted(
      [_prompt(q) + rewritten.lower()
       for q, rewritten in (("who founded karik studios?", ONE_SEARCH_REWRITTEN),
                            ("who founded karik studios?", ONE_SEARCH_REWRITTEN),
                            ("when was the director of vorantel born?",
                             TWO_SEARCHES_REWRITTEN))])
  assert len(mem_batches) == steps
  for mem in mem_batches:
    used = [i for i in range(mem.tokens.shape[0]) if mem.loss_mask[i].any()]
    assert len(used) == want
    texts, targets = [], []
    for i in used:
      n = int((mem.positions[i] >= 0).sum())
      texts.append(TOK.decode(mem.tokens[i, :n].tolist()))
      targets.append(TOK.decode(mem.tokens[i][mem.loss_mask[i] == 1].tolist()))
    assert sorted(texts) == want_texts
    assert sorted(targets) == sorted(t[t.index("\n") + 1:] for t in want_texts)


def test_rl_run_without_memorization_builds_no_batch(tmp_path, monkeypatch):
  calls = record_updates(monkeypatch)
  trainer = scripted_trainer(
      tmp_path, RLSettings(group_size=4, memorization="none", fit_multiple=16),
      reward_names=("answer_cem",))
  trainer.run()
  mem_batches = [mem for _, mem in calls]
  assert mem_batches == [None]
  assert trainer.history[0]["memorized"] == 0


def test_rl_step_learns_only_from_groups_whose_rewards_differ(tmp_path, monkeypatch):
  """The second question's four rollouts all answer 1974 (wrong) in the
  same format: one reward, advantage 0. The step logs half its rollouts
  as having gradient, and its update (two length groups of 4) runs one
  pass, over the first question's rollouts."""
  wrong = [(t.replace("1931</answer>", "1974</answer>"), r)
           for t, r in _lower(TWO_SEARCHES)]
  script = dict(SCRIPT)
  script["when was the director of vorantel born?"] = [(wrong, False)] * 4
  monkeypatch.setitem(globals(), "SCRIPT", script)
  passes = []
  grouped = _train_step.Learner._grouped_rl_grads

  def counted(self, batch):
    out = grouped(self, batch)
    passes.append(self.last_passes)
    return out

  monkeypatch.setattr(_train_step.Learner, "_grouped_rl_grads", counted)
  trainer = scripted_trainer(
      tmp_path, RLSettings(group_size=4, length_groups=2, fit_multiple=16),
      reward_names=("answer_cem",))
  trainer.run()
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rows = [r for r in rows if r["stage"] == "rl"]
  assert [r["grad_rows"] for r in rows] == [0.5]
  assert [r["accuracy"] for r in rows] == [0.375]  # 3 of the first 4 right
  assert passes == [1]
