"""The demo's data assembly (`experiment._synthetic`): the cold start's
trajectories in renamed worlds, the whole-word tokenizer, the RL questions
the cold start left out, and the question splits read through a seqio Task
(the same questions, in the same order, as the world's splits)."""

import collections
import importlib.util
import json
import pathlib
import re

import jax
import pytest

from rsearch_jax import eval as eval_lib
from rsearch_jax import experiment, sharding
from rsearch_jax.data import _tasks, synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(tmp_path, **data):
  spec = importlib.util.spec_from_file_location("r1pp", ROOT / "configs" / "r1pp.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config("demo")
  cfg.workdir = str(tmp_path)
  cfg.world.update(dict(num_people=20, num_films=10, num_companies=6,
                        num_cities=6, pretrain_repeats=2))
  cfg.model.update(dict(vocab_size=1024, hidden_size=32, intermediate_size=64,
                        num_layers=1))
  # The world's own trajectories alone (no rehearsal texts, no renamed or
  # perturbed worlds, the default tokenizer), unless a test asks for more.
  cfg.data.update({"sft_examples": 8, "sft_rehearsal": 0,
                   "sft_perturbed_worlds": 0, "sft_renamed_two_hop": 0,
                   "whole_word_names": False, "sft_sort_window": 0, **data})
  cfg.sampling.update(dict(doc_tokens=80, doc_block_len=168, max_len=600))
  return cfg


def _answer(segments):
  text = "".join(t if isinstance(t, str) else "" for t, _ in segments)
  return re.search(r"<answer>(.*?)</answer>", text).group(1)


def test_renamed_worlds_add_counterfactual_trajectories(tmp_path):
  cfg = _config(tmp_path, sft_renamed_worlds=3, sft_renamed_two_hop=0,
                whole_word_names=True)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  model, tok, retriever, datasets, prompt_fn, eval_sets = experiment._synthetic(
      cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  splits = synthetic.make_splits(world, seed=cfg.world.seed)
  sft = datasets["sft"]
  assert len(sft) == 8 + 3 * 8
  real = {prompt_fn(q.question): q.answers[0] for q in world.questions()}
  known = {prompt_fn(q.question) for q in world.questions() if q.internal}
  held_names = {e for q in splits["heldout_entities"] for e in q.entities}
  held_prompts = {prompt_fn(q.question) for q in splits["heldout"]}
  differs = 0
  for i, (prompt, segments) in enumerate(sft):
    assert prompt not in held_prompts
    if i < 8:  # the real world's own trajectories come first
      assert _answer(segments) == real[prompt]
      continue
    # The prompt names no held-out entity, and the answer is the renamed
    # world's: the real world often answers the same question differently.
    assert not any(n in prompt for n in held_names), prompt
    differs += _answer(segments) != real.get(prompt)
    # ... but never where the pretraining text taught the real answer.
    if prompt in known:
      assert _answer(segments) == real[prompt], prompt
    # Retrieved blocks are the sampler's ids and decode to documents that
    # state the answer the trajectory gives.
    blocks = [tok.decode(ids) for ids, retrieved in segments if retrieved]
    assert blocks and any(_answer(segments) in b for b in blocks)
  assert differs > 0.5 * 3 * 8
  # Whole-word names: each name word is one token.
  for word in world.name_words():
    assert len(tok.encode(word)) == 1, word


def test_renamed_worlds_add_a_few_multi_hop_trajectories(tmp_path):
  cfg = _config(tmp_path, sft_renamed_worlds=2, sft_renamed_two_hop=3)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, tok, _, datasets, prompt_fn, _ = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  splits = synthetic.make_splits(world, seed=cfg.world.seed)
  keep = {e for q in splits["heldout_entities"] for e in q.entities}
  held_prompts = {prompt_fn(q.question) for q in splits["heldout"]}
  sft = datasets["sft"]
  assert len(sft) == 8 + 2 * (8 + 3)
  kinds = []
  for k in range(2):
    # Each renamed world: 8 one-hop trajectories, then 3 multi-hop ones.
    other = {prompt_fn(q.question): q for q in world.renamed(k, keep=keep).questions()}
    start = 8 + k * 11
    for prompt, segments in sft[start:start + 8]:
      assert other[prompt].kind == "1hop"
    for prompt, segments in sft[start + 8:start + 11]:
      q = other[prompt]
      kinds.append(q.kind)
      assert q.kind in ("2hop", "comparison") and prompt not in held_prompts
      assert not keep.intersection(q.entities)
      assert _answer(segments) == q.answers[0]  # the renamed world's answer
      # One search a hop (the world's own facts are not this world's).
      blocks = [tok.decode(ids) for ids, retrieved in segments if retrieved]
      assert len(blocks) >= 2
      for fact in q.facts:
        assert any(fact.subject in b and fact.object in b for b in blocks), fact
  assert set(kinds) == {"2hop", "comparison"}  # spread over the kinds
  # RL questions: the training questions but the world's own 8 scripted ones
  # (a renamed world's trajectory shares a text, not an answer, with them).
  unseen = [prompt_fn(q.question) for q in datasets["train_unseen"]]
  assert sorted(unseen + [prompt for prompt, _ in sft[:8]]) == sorted(
      prompt_fn(q.question) for q in splits["train"])
  assert {q.kind for q in datasets["train_unseen"]} == {"1hop", "2hop",
                                                        "comparison"}


def test_copy_warm_up_examples_use_the_tokenizers_text_pieces(tmp_path):
  cfg = _config(tmp_path, copy_examples=50, sft_renamed_worlds=0)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, tok, _, datasets, _, _ = experiment._synthetic(cfg, mesh)
  examples = datasets["copy"]
  assert len(examples) == 50
  text = set(tok.text_piece_ids())
  for prompt, [(target, retrieved)] in examples:
    assert not retrieved and prompt[-2] == tok.eos_id  # then the copy
    assert set(prompt[:-2]) | {prompt[-1]} | set(target) <= text
  # The demo trains on them first, in a stage of kind "sft".
  assert cfg.curriculum.split(",")[0] == "copy"
  assert (cfg.stages.copy.kind, cfg.stages.copy.data) == ("sft", "copy")


def test_train_unseen_holds_the_questions_the_cold_start_did_not_script(tmp_path):
  # The world's own trajectories only (renamed worlds script more texts;
  # test_renamed_worlds_add_counterfactual_trajectories covers them).
  cfg = _config(tmp_path, sft_renamed_worlds=0, sft_renamed_two_hop=0)
  cfg.eval.num_questions = 10
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, _, _, datasets, prompt_fn, eval_sets = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  splits = synthetic.make_splits(world, seed=cfg.world.seed)
  train = splits["train"]
  scripted = [prompt for prompt, _ in datasets["sft"]]
  unseen = [prompt_fn(q.question) for q in datasets["train_unseen"]]
  assert len(scripted) == 8 and not set(scripted) & set(unseen)
  assert sorted(scripted + unseen) == sorted(prompt_fn(q.question) for q in train)
  # Read through the seqio Task, the questions are the world's splits, in
  # their order: RL's, the ones it leaves to RL, and the held-out ones.
  assert datasets["train"] == train
  assert datasets["train_unseen"] == [q for q in train
                                      if prompt_fn(q.question) not in scripted]
  assert eval_sets == splits["heldout"][:10]
  for split in ("train", "heldout", "heldout_entities"):
    assert (tmp_path / "data" / f"synthetic_{split}.jsonl").is_file()
  # The cold start is 1-hop only, so every multi-hop question stays for RL.
  assert sum(q.hops == 2 for q in datasets["train_unseen"]) == sum(
      q.hops == 2 for q in train)
  # train_chained: those of them that chain two facts, told from the text
  # alone: two relation words ("Where was the spouse of X born?"), where a
  # 1-hop question has one and a comparison names two entities with "or".
  words = re.compile(r"\b(?:director|founder|founded|spouse|married|born|"
                     r"headquartered|based)\b")
  assert datasets["train_chained"] == [
      q for q in datasets["train_unseen"]
      if len(words.findall(q.question)) == 2 and " or " not in q.question]
  assert len(datasets["train_chained"]) >= 10
  # train_multihop: the chained ones and the comparisons ("A or B?").
  assert datasets["train_multihop"] == [
      q for q in datasets["train_unseen"]
      if q in datasets["train_chained"] or " or " in q.question]
  assert len(datasets["train_multihop"]) >= 2 * len(datasets["train_chained"]) - 5


def _fields(q):
  return (q.id, q.question, q.answers, q.hops, q.kind, q.internal, q.facts,
          q.entities)


def test_synthetic_splits_read_through_seqio_equal_the_worlds_splits(
    tmp_path, monkeypatch):
  world = synthetic.make_world(synthetic.WorldConfig(
      num_people=20, num_films=10, num_companies=6, num_cities=6))
  loaded = []
  load = _tasks.load_task_examples

  def recording_load(task, split=None):
    loaded.append((task, split))
    return load(task, split)

  monkeypatch.setattr(_tasks, "load_task_examples", recording_load)
  via = experiment.synthetic_splits(world, 3, tmp_path / "data")
  direct = synthetic.make_splits(world, seed=3)
  assert list(via) == list(direct) == ["train", "heldout", "heldout_entities"]
  for split, questions in direct.items():
    got = via[split]
    # Equal Questions (every field), in the same order; read back, not the
    # same objects.
    assert [_fields(q) for q in got] == [_fields(q) for q in questions]
    assert got == questions and got[0] is not questions[0]
    assert all(type(q) is synthetic.Question for q in got)
    # The labels evaluation splits its metrics by: knowledge (internal),
    # hops, with their types, and the kind of a 2-hop question.
    for g, d in zip(got, questions):
      assert type(g.internal) is bool and type(g.hops) is int
      assert g.kind == d.kind in ("1hop", "2hop", "comparison")
      kind = {"2hop": {"kind": "chained"},
              "comparison": {"kind": "comparison"}}.get(d.kind, {})
      assert eval_lib._labels(g) == {
          "knowledge": "internal" if d.internal else "corpus",
          "hops": f"{d.hops}hop", **kind}
    # The files hold the split, one JSON row per question.
    path = tmp_path / "data" / f"synthetic_{split}.jsonl"
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    assert [(r["idx"], r["question"], r["kind"], r["internal"]) for r in rows] == [
        (q.id, q.question, q.kind, q.internal) for q in questions]
  # Every split came through one seqio Task named after its data.
  [task] = {t for t, _ in loaded}
  assert [s for _, s in loaded] == list(direct)
  assert task.startswith("synthetic_")
  import seqio  # noqa: PLC0415
  assert tuple(seqio.TaskRegistry.get(task).splits) == tuple(direct)
  # Another seed holds other questions: another Task.
  loaded.clear()
  other = experiment.synthetic_splits(world, 4, tmp_path / "data4")
  assert other["train"] != via["train"]
  assert {t for t, _ in loaded} != {task}


def test_pretraining_rows_hold_each_shuffle_once(tmp_path):
  """`data.pretrain_shuffles`: the rows hold each shuffle of the pretraining
  text once, in order, none repeated, none longer than a row."""
  cfg = _config(tmp_path, pretrain_shuffles=3)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, tok, _, datasets, _, _ = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  rows = datasets["pretrain"]
  assert len(set(rows)) == len(rows)
  texts = [t for row in rows for t in row.split("\n")]
  assert texts == [t for e in range(3) for t in world.pretraining_texts(shuffle=e)]
  assert all(len(tok.encode(row)) <= cfg.data.seq_len - 1 for row in rows)


def test_sft_rehearsal_mixes_unseen_pretraining_texts(tmp_path):
  """`data.sft_rehearsal`: the SFT set gains that many pretraining texts as
  plain next-token examples (BOS, then every token a target), taken from the
  shufflings after the pretraining stage's (other groupings, orders and
  phrasings); the scripted trajectories are unchanged."""
  n = 100  # several shuffles' texts at these sizes
  base = _config(tmp_path / "a", pretrain_shuffles=2, sft_renamed_worlds=1)
  cfg = _config(tmp_path / "b", pretrain_shuffles=2, sft_renamed_worlds=1,
                sft_rehearsal=n)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, _, _, plain, _, _ = experiment._synthetic(base, mesh)
  _, tok, _, datasets, _, _ = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  per_shuffle = len(world.pretraining_texts(shuffle=2))
  assert per_shuffle < n
  sft = datasets["sft"]
  assert sft[:len(plain["sft"])] == plain["sft"]
  extra = sft[len(plain["sft"]):]
  assert len(extra) == n
  later = [t for e in range(2, 2 + n // per_shuffle + 1)
           for t in world.pretraining_texts(shuffle=e)]
  assert [segs for _, segs in extra] == [[(t, False)] for t in later[:n]]
  assert all(list(prompt) == [tok.bos_id] for prompt, _ in extra)


def test_perturbed_worlds_recall_the_internal_facts_and_read_the_others(tmp_path):
  """R1-Searcher++'s cold start in perturbed worlds: every trajectory answers
  with the perturbed world's answer, recalls exactly the internal facts (the
  real world's, which the pretraining text states) in <internal> tags and
  searches the others; none has the facts of a held-out question."""
  cfg = _config(tmp_path, sft_renamed_worlds=0, sft_perturbed_worlds=2)
  assert cfg.method == "r1pp" and not cfg.data.sft_search_all
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, tok, _, datasets, prompt_fn, _ = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  splits = synthetic.make_splits(world, seed=cfg.world.seed)
  held = {frozenset(q.facts) for q in splits["heldout"]}
  held_names = {e for q in splits["heldout_entities"] for e in q.entities}
  sft = datasets["sft"]
  assert len(sft) == 8 + 2 * 8
  recalled = searched = 0
  for k in range(2):
    other = world.perturbed(k)
    questions = {prompt_fn(q.question): q for q in other.questions()}
    for prompt, segments in sft[8 + 8 * k:16 + 8 * k]:
      q = questions[prompt]
      assert q.kind == "1hop" and frozenset(q.facts) not in held
      assert not held_names.intersection(q.entities)
      assert _answer(segments) == q.answers[0]
      (fact,) = q.facts
      own = "".join(t for t, r in segments if isinstance(t, str) and not r)
      blocks = [tok.decode(ids) for ids, r in segments if r]
      if fact in world.internal:  # known: recalled, no search
        assert "<internal>" in own and not blocks
        recalled += 1
      else:  # shuffled: searched and read
        assert "<internal>" not in own and blocks
        assert any(q.answers[0] in b for b in blocks)
        searched += 1
  assert recalled >= 4 and searched >= 4


def test_sft_search_internal_searches_some_internal_facts(tmp_path):
  """data.sft_search_internal: in the world and its perturbed copies, that
  share of R1-Searcher++'s trajectories search the internal facts too (so
  the cold start sees a query after <external> on a fact it knows); the
  others recall them. At 0 every internal fact is recalled, at 1 none."""
  def internal_trajectories(frac):
    cfg = _config(tmp_path / str(frac), sft_renamed_worlds=0,
                  sft_perturbed_worlds=2, sft_examples=16,
                  sft_search_internal=frac)
    mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    _, tok, _, datasets, prompt_fn, _ = experiment._synthetic(cfg, mesh)
    world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
    questions = {prompt_fn(q.question): q
                 for w in [world, world.perturbed(0), world.perturbed(1)]
                 for q in w.questions()}
    out = []  # (searched, recalled) of each trajectory on an internal fact
    for prompt, segments in datasets["sft"]:
      q = questions[prompt]
      if q.kind != "1hop" or q.facts[0] not in world.internal:
        continue
      own = "".join(t for t, r in segments if isinstance(t, str) and not r)
      blocks = [tok.decode(ids) for ids, r in segments if r]
      assert _answer(segments) == q.answers[0]
      if blocks:
        assert any(q.answers[0] in b for b in blocks)
      out.append((bool(blocks), "<internal>" in own))
    return out

  none, half, every = (internal_trajectories(f) for f in (0.0, 0.5, 1.0))
  assert len(none) >= 8 and len(half) >= 8 and len(every) >= 8
  assert all(recalled and not searched for searched, recalled in none)
  assert all(searched and not recalled for searched, recalled in every)
  n_searched = sum(searched for searched, _ in half)
  assert 0.2 * len(half) <= n_searched <= 0.8 * len(half)
  assert all(searched != recalled for searched, recalled in half)
  cfg = _config(tmp_path / "bad", sft_search_internal=1.5)
  try:
    experiment.validate(cfg)
  except ValueError as e:
    assert "data.sft_search_internal=1.5" in str(e)
  else:
    raise AssertionError("sft_search_internal=1.5 was accepted")


def test_the_run_seed_keeps_the_worlds_data(tmp_path):
  """`seed` seeds the training (initialisation, data order, sampling, copy
  examples); the world's questions, their splits, the tokenizer and the
  scripted cold start follow `world.seed`. So a run branched with another
  seed (an RL stage from the same cold-start checkpoint) reads the same
  token ids and holds out the same questions; another world.seed changes
  them."""
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])

  def data(name, **top):
    cfg = _config(tmp_path / name, sft_renamed_worlds=1, sft_perturbed_worlds=1,
                  copy_examples=16)
    for key, value in top.items():
      if key == "world_seed":
        cfg.world.seed = value
      else:
        cfg[key] = value
    _, tok, _, datasets, _, eval_sets = experiment._synthetic(cfg, mesh)
    return tok, datasets, eval_sets

  tok0, d0, e0 = data("a")
  tok1, d1, e1 = data("b", seed=1)
  _, _, e2 = data("c", world_seed=1)
  text = "Who directed the film? <internal> born in </internal>"
  assert tok1.encode(text) == tok0.encode(text)
  assert [_fields(q) for q in e1] == [_fields(q) for q in e0]
  for key in ("train", "train_unseen"):
    assert [_fields(q) for q in d1[key]] == [_fields(q) for q in d0[key]]
  assert d1["sft"] == d0["sft"] and d1["pretrain"] == d0["pretrain"]
  assert d1["copy"] != d0["copy"]  # training data drawn with the run's seed
  assert [q.question for q in e2] != [q.question for q in e0]


def test_restating_and_premature_agents_reach_the_cold_start(tmp_path):
  """data.sft_restate / data.sft_premature: in the renamed copies' chained
  trajectories, a share (about sft_premature) answers the bridge after the
  first hop, the others restate the remaining 1-hop question and answer
  right; no other trajectory restates. Shares outside [0, 1] are config
  errors that name the field."""
  cfg = _config(tmp_path, sft_renamed_worlds=6, sft_renamed_two_hop=12,
                sft_examples=4, sft_restate="chained", sft_premature=0.5)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, _, _, datasets, prompt_fn, _ = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  splits = synthetic.make_splits(world, seed=cfg.world.seed)
  keep = {e for q in splits["heldout_entities"] for e in q.entities}
  kinds, golds = {}, collections.defaultdict(set)
  for k in range(6):  # a kept name's question can recur across copies
    for q in world.renamed(k, keep=keep).questions():
      kinds[prompt_fn(q.question)] = q.kind
      golds[prompt_fn(q.question)].add(q.answers[0])
  short = restated = 0
  for prompt, segments in datasets["sft"]:
    own = "".join(t for t, r in segments if isinstance(t, str) and not r)
    if kinds.get(prompt) != "2hop":
      assert "\nQuestion:" not in own
      continue
    if "\nQuestion:" in own:
      assert own.count("\nQuestion:") == 1 and own.count("I need") == 2
      assert _answer(segments) in golds[prompt]
      restated += 1
    else:
      assert own.count("I need") == 1
      assert _answer(segments) not in golds[prompt]
      short += 1
  assert short >= 4 and restated >= 4, (short, restated)
  assert 0.25 <= short / (short + restated) <= 0.75
  cfg = _config(tmp_path / "bad", sft_premature=-0.1)
  with pytest.raises(ValueError, match=r"data.sft_premature=-0.1"):
    experiment.validate(cfg)
  cfg = _config(tmp_path / "bad", sft_restate="sometimes")
  with pytest.raises(ValueError, match=r"data.sft_restate='sometimes' is not "
                     r"one of 'none', 'chained', 'every_hop'"):
    experiment.validate(cfg)
  cfg = _config(tmp_path / "bad", sft_compare="both")
  with pytest.raises(ValueError, match=r"data.sft_compare='both' is not "
                     r"one of 'two_searches', 'one_search'"):
    experiment.validate(cfg)


def test_one_search_comparisons_reach_the_cold_start(tmp_path):
  """data.sft_compare="one_search": the renamed copies' comparison
  trajectories search once, with a query naming both people or films, and
  answer right; the chained ones still search twice."""
  cfg = _config(tmp_path, sft_renamed_worlds=4, sft_renamed_two_hop=12,
                sft_examples=4, sft_compare="one_search")
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, _, _, datasets, prompt_fn, _ = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  splits = synthetic.make_splits(world, seed=cfg.world.seed)
  keep = {e for q in splits["heldout_entities"] for e in q.entities}
  questions = {}
  for k in range(4):
    for q in world.renamed(k, keep=keep).questions():
      questions.setdefault(prompt_fn(q.question), []).append(q)
  seen = collections.Counter()
  for prompt, segments in datasets["sft"]:
    qs = questions.get(prompt)
    if not qs or qs[0].kind == "1hop":
      continue
    own = "".join(t for t, r in segments if isinstance(t, str) and not r)
    queries = re.findall(r"<external>(.*?)</external>", own)
    kind = qs[0].kind
    seen[kind] += 1
    if kind == "comparison":
      assert len(queries) == 1 and all(e in queries[0]
                                       for e in qs[0].entities), own
      assert _answer(segments) in {q.answers[0] for q in qs}
    else:
      assert len(queries) + own.count("<internal>") == 2
  assert seen["comparison"] >= 8 and seen["2hop"] >= 8, seen


def test_rl_renamed_worlds_add_questions_that_search_their_copy(tmp_path):
  cfg = _config(tmp_path, sft_renamed_worlds=2, rl_renamed_worlds=3)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  _, _, retriever, datasets, _, _ = experiment._synthetic(cfg, mesh)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  splits = synthetic.make_splits(world, seed=cfg.world.seed)
  held_names = {e for q in splits["heldout_entities"] for e in q.entities}
  held_texts = {q.question for q in splits["heldout"]}
  base = datasets["train_multihop"]
  mixed = datasets["train_multihop_renamed"]
  assert mixed[:len(base)] == base and all(q.corpus == "" for q in base)
  more = mixed[len(base):]
  # The copies after the cold start's two, each with as many comparisons as
  # chained questions.
  per_copy = collections.Counter((q.corpus, q.kind) for q in more)
  assert {c for c, _ in per_copy} == {"renamed-2", "renamed-3", "renamed-4"}
  for c in ("renamed-2", "renamed-3", "renamed-4"):
    assert per_copy[c, "2hop"] == per_copy[c, "comparison"] >= 5
  assert len({q.id for q in mixed}) == len(mixed)
  assert not any(held_names & set(q.entities) or q.question in held_texts
                 for q in more)
  # Every fact of a question is in its own copy's corpus (the subject's
  # document states the object), found by searching that copy; some of
  # them the world's own corpus contradicts.
  contradicted = 0
  for q in more:
    for f in q.facts:
      docs = retriever.search([f.subject], 3, corpora=[q.corpus])[0]
      own = [d for d in docs if d.title == f.subject]
      assert own and str(f.object) in own[0].text, (q, f)
      theirs = [d for d in retriever.search([f.subject], 3)[0]
                if d.title == f.subject]
      contradicted += bool(theirs) and str(f.object) not in theirs[0].text
  assert contradicted > len(more) // 2
  # The world's own questions still search the world: the default corpus.
  assert retriever.search(["x"], 1) == retriever.retrievers[""].search(["x"], 1)
