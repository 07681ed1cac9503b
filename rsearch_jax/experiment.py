"""A training run assembled from its config: the one place that reads it.

Main entry points:
  validate(cfg)            consistency checks, before any work starts.
  build_trainer(cfg)       -> Trainer for the config's data source:
                           "synthetic" (the demo world: tokenizer, tiny model,
                           corpus, pretraining text, SFT trajectories, RL
                           questions, held-out evaluation) or "r1_searcher"
                           (real model, R1-Searcher's training questions).
  synthetic_splits(world, seed, data_dir)
                           the demo world's question splits, read through the
                           seqio Task they are written to.

`launch/train.py` calls `build_trainer(cfg).run()`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random

import numpy as np

from flax import nnx

from rsearch_jax import builders, eval as eval_lib, models, prompts
from rsearch_jax import rewards as rewards_lib
from rsearch_jax import rl as rl_lib
from rsearch_jax import sharding
from rsearch_jax.rl import LossConfig, OptimConfig, RLSettings, Stage, Trainer


def validate(cfg) -> None:
  """Raises ValueError naming the field for an inconsistent config."""
  problems = []
  if cfg.method not in prompts.METHOD_TAGS:
    problems.append(f"method={cfg.method!r} is not one of {sorted(prompts.METHOD_TAGS)}")
  problems += _bad_choices(cfg)
  s = cfg.sampling
  if s.max_len <= s.max_prompt_len:
    problems.append(f"sampling.max_len={s.max_len} must exceed "
                    f"sampling.max_prompt_len={s.max_prompt_len}")
  for field in ("sft_renamed_worlds", "sft_perturbed_worlds", "rl_renamed_worlds"):
    if cfg.data[field] < 0:
      problems.append(f"data.{field}={cfg.data[field]} should be >= 0")
  if cfg.data.sft_renamed_two_hop < 0 or (
      cfg.data.sft_renamed_two_hop and not cfg.data.sft_renamed_worlds
      and not cfg.data.sft_perturbed_worlds):
    problems.append(f"data.sft_renamed_two_hop={cfg.data.sft_renamed_two_hop} "
                    "should be >= 0, and needs data.sft_renamed_worlds > 0 or "
                    "data.sft_perturbed_worlds > 0 (they are "
                    f"{cfg.data.sft_renamed_worlds} and "
                    f"{cfg.data.sft_perturbed_worlds})")
  if cfg.data.copy_examples < 0:
    problems.append(f"data.copy_examples={cfg.data.copy_examples} should be >= 0")
  if cfg.data.pretrain_shuffles < 1:
    problems.append(f"data.pretrain_shuffles={cfg.data.pretrain_shuffles} "
                    "should be >= 1")
  if cfg.data.sft_sort_window < 0:
    problems.append(f"data.sft_sort_window={cfg.data.sft_sort_window} should "
                    "be >= 0 (0: plain shuffled batches)")
  if cfg.eval.every < 0:
    problems.append(f"eval.every={cfg.eval.every} should be >= 0 (0: evaluate "
                    "after each stage only)")
  if cfg.data.sft_rehearsal < 0:
    problems.append(f"data.sft_rehearsal={cfg.data.sft_rehearsal} should be >= 0")
  if (cfg.data.sft_renamed_worlds or cfg.data.sft_perturbed_worlds
      or cfg.data.rl_renamed_worlds
      or cfg.data.whole_word_names or cfg.data.copy_examples
      or cfg.data.sft_rehearsal) and cfg.data.source != "synthetic":
    problems.append("data.sft_renamed_worlds, data.sft_perturbed_worlds, "
                    "data.rl_renamed_worlds, "
                    "data.whole_word_names, data.copy_examples and "
                    "data.sft_rehearsal apply to the synthetic world only "
                    f"(data.source={cfg.data.source!r})")
  for n in _names(cfg.curriculum):
    if n in cfg.stages and cfg.stages[n].data == "copy" and (
        cfg.data.copy_examples <= 0 or cfg.stages[n].kind != "sft"):
      problems.append(f"stages.{n} trains on the copy examples: it needs "
                      "data.copy_examples > 0 and kind 'sft' (data."
                      f"copy_examples={cfg.data.copy_examples}, kind="
                      f"{cfg.stages[n].kind!r})")
  for n in _names(cfg.curriculum):
    if (n in cfg.stages and cfg.stages[n].data == "train_multihop_renamed"
        and cfg.data.rl_renamed_worlds <= 0):
      problems.append(f"stages.{n}.data='train_multihop_renamed' needs "
                      "data.rl_renamed_worlds > 0 (the renamed copies its "
                      "questions come from)")
  if cfg.model.smear_keys and cfg.model.path != "scratch":
    problems.append("model.smear_keys applies to a scratch model only "
                    f"(model.path={cfg.model.path!r}: Llama / Qwen2 weights "
                    "were trained without it); add "
                    "--config.model.smear_keys=False")
  problems += _bad_optim(cfg.optim)
  if cfg.rl.loss.logits_chunk < 0:
    problems.append(f"rl.loss.logits_chunk={cfg.rl.loss.logits_chunk} must be "
                    ">= 0 (0: no chunking)")
  if cfg.rl.fit_multiple < 0:
    problems.append(f"rl.fit_multiple={cfg.rl.fit_multiple} must be >= 0")
  for name in ("sft_search_internal", "sft_premature"):
    if not 0 <= cfg.data[name] <= 1:
      problems.append(f"data.{name}={cfg.data[name]} must be in [0, 1]")
  if cfg.rl.loss.mem_coef > 0 and cfg.rl.memorization == "none":
    problems.append("rl.loss.mem_coef > 0 needs rl.memorization='rule' or 'policy'")
  if cfg.rl.loss.kl_kind == "k1_reward" and cfg.rl.advantage != "reinforce_pp":
    problems.append("rl.loss.kl_kind='k1_reward' folds KL into the reward, "
                    "which only rl.advantage='reinforce_pp' does")
  for n in _names(cfg.curriculum):
    if n not in cfg.stages:
      problems.append(f"curriculum names stage {n!r}, not in stages "
                      f"({', '.join(cfg.stages.keys())})")
  for field in ("micro_batches", "mini_batches", "epochs", "length_groups"):
    if cfg.rl[field] < 1:
      problems.append(f"rl.{field}={cfg.rl[field]} should be >= 1")
  if cfg.rl.length_groups > 1 and cfg.rl.micro_batches > 1:
    problems.append(f"rl.length_groups={cfg.rl.length_groups} needs "
                    f"rl.micro_batches=1 (got {cfg.rl.micro_batches})")
  split = (max(cfg.rl.mini_batches, 1) * max(cfg.rl.micro_batches, 1)
           * max(cfg.rl.length_groups, 1))
  for n, st in cfg.stages.items():
    if st.kind == "rl" and (st.batch_size * cfg.rl.group_size) % split:
      problems.append(f"stages.{n}: batch_size*rl.group_size="
                      f"{st.batch_size * cfg.rl.group_size} rollouts do not split "
                      f"into rl.mini_batches={cfg.rl.mini_batches} x "
                      f"rl.micro_batches={cfg.rl.micro_batches} x "
                      f"rl.length_groups={cfg.rl.length_groups}")
  for field, spec in [("eval.rewards", cfg.eval.rewards)] + [
      (f"stages.{n}.rewards", st.rewards) for n, st in cfg.stages.items()]:
    for r in _names(spec):
      try:
        rewards_lib.get_reward(r)
      except (KeyError, ValueError) as e:
        problems.append(f"{field}: {e}")
  if problems:
    raise ValueError("config: " + "; ".join(problems))


def _bad_choices(cfg) -> list[str]:
  """A problem for each field whose value is not one of its allowed names."""
  from rsearch_jax.data import synthetic as synthetic_lib
  fields = [("rl.advantage", cfg.rl.advantage, rl_lib.ADVANTAGE_METHODS),
            ("rl.memorization", cfg.rl.memorization, rl_lib.MEMORIZATIONS),
            ("rl.loss.aggregation", cfg.rl.loss.aggregation,
             rl_lib.AGGREGATIONS),
            ("rl.loss.kl_kind", cfg.rl.loss.kl_kind, rl_lib.LOSS_KL_KINDS),
            ("data.sft_restate", cfg.data.sft_restate,
             synthetic_lib.RESTATE_MODES),
            ("data.sft_compare", cfg.data.sft_compare,
             synthetic_lib.COMPARE_MODES)]
  fields += [(f"stages.{n}.kind", st.kind, rl_lib.STAGE_KINDS)
             for n, st in cfg.stages.items()]
  return [f"{field}={value!r} is not one of {', '.join(map(repr, allowed))}"
          for field, value, allowed in fields if value not in allowed]


def _bad_optim(o) -> list[str]:
  """A problem for each optim.* value AdamW or the schedule cannot use."""
  problems = []
  if o.schedule not in rl_lib.SCHEDULES:
    problems.append(f"optim.schedule={o.schedule!r} is not one of "
                    f"{', '.join(map(repr, rl_lib.SCHEDULES))}")
  for name in ("grad_clip", "weight_decay"):
    if o[name] < 0:
      problems.append(f"optim.{name}={o[name]} must be >= 0 (0: off)")
  if not 0 <= o.min_lr_ratio <= 1:
    problems.append(f"optim.min_lr_ratio={o.min_lr_ratio} must be in [0, 1]")
  for name in ("b1", "b2"):
    if not 0 <= o[name] < 1:
      problems.append(f"optim.{name}={o[name]} must be in [0, 1)")
  if o.eps <= 0:
    problems.append(f"optim.eps={o.eps} must be > 0")
  return problems


def _names(spec: str) -> tuple[str, ...]:
  """A comma-separated list of names, blanks dropped."""
  return tuple(n.strip() for n in spec.split(",") if n.strip())


def stages_from(cfg) -> list[Stage]:
  out = []
  for n in _names(cfg.curriculum):
    st = cfg.stages[n]
    out.append(Stage(name=n, kind=st.kind, steps=st.steps, data=st.data,
                     batch_size=st.batch_size,
                     rewards=_names(st.rewards),
                     learning_rate=st.learning_rate, warmup_steps=st.warmup_steps))
  return out


def rl_settings(cfg, grammar=None) -> RLSettings:
  """RL settings from `rl.*`; `grammar` is the sampler's tag grammar (the
  loss scores tokens under the same constraint)."""
  loss = LossConfig(**{f.name: cfg.rl.loss[f.name]
                       for f in dataclasses.fields(LossConfig)
                       if f.name in cfg.rl.loss})
  loss = dataclasses.replace(loss, temperature=cfg.sampling.temperature or 1.0,
                             grammar=grammar)
  return RLSettings(group_size=cfg.rl.group_size, advantage=cfg.rl.advantage,
                    whiten=cfg.rl.whiten, loss=loss,
                    micro_batches=cfg.rl.micro_batches,
                    length_groups=cfg.rl.length_groups,
                    skip_zero_gradient=cfg.rl.skip_zero_gradient,
                    mini_batches=cfg.rl.mini_batches, epochs=cfg.rl.epochs,
                    memorization=cfg.rl.memorization,
                    fit_multiple=cfg.rl.fit_multiple)


def optim_settings(cfg) -> OptimConfig:
  """Every stage's optimizer but its learning rate, warmup and length."""
  return OptimConfig(**cfg.optim)


def build_trainer(cfg) -> Trainer:
  validate(cfg)
  sharding.maybe_initialize_distributed(cfg.mesh.distributed)
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  if cfg.data.source == "synthetic":
    parts = _synthetic(cfg, mesh)
  elif cfg.data.source == "r1_searcher":
    parts = _r1_searcher(cfg, mesh)
  else:
    raise ValueError(f"data.source={cfg.data.source!r}: expected 'synthetic' "
                     "or 'r1_searcher'")
  model, tok, retriever, datasets, prompt_fn, eval_sets = parts
  reward_tags = rewards_lib.METHOD_TAGSETS[cfg.method]
  grammar = builders.grammar_from_config(tok, cfg.sampling, cfg.method)
  method_tags = prompts.METHOD_TAGS[cfg.method]

  samplers = {}

  def make_sampler(m, temperature=None):
    # One sampler per temperature, given the current weights: its jitted loop
    # (static on the sampler's hand-off) then compiles once per run, not once
    # per RL step and evaluation.
    if temperature not in samplers:
      fields = dict(cfg.sampling)
      if temperature is not None:
        fields["temperature"] = temperature
      samplers[temperature] = builders.build_sampler(
          m, tok, fields, retriever=retriever, method=cfg.method, mesh=mesh)
    samplers[temperature].model = m
    return samplers[temperature]

  # Held-out rollouts are scored with one set of rewards (eval.rewards, else
  # the last RL stage's), so eval/reward means the same after every stage.
  stages = stages_from(cfg)
  eval_rewards = _names(cfg.eval.rewards) or next(
      (s.rewards for s in reversed(stages) if s.kind == "rl"), ())

  # In the synthetic world, what the model knows without documents too.
  world = None
  if cfg.data.source == "synthetic":
    from rsearch_jax.data import synthetic
    world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))

  def eval_fn(trainer, after):
    sampler = make_sampler(trainer.current_model(), temperature=0.0)
    metrics, _ = eval_lib.evaluate(sampler, tok, eval_sets, prompt_fn,
                                   reward_tags, batch_size=cfg.eval.batch_size,
                                   rewards=eval_rewards)
    if world is not None:
      known = eval_lib.fact_recall(trainer.current_model(), tok, world)
      metrics.update({f"knows/{k}": v for k, v in known.items()})
    return metrics

  return Trainer(
      model=model, tokenizer=tok, make_sampler=make_sampler, tags=method_tags,
      reward_tags=reward_tags, stages=stages, datasets=datasets,
      prompt_fn=prompt_fn, rl=rl_settings(cfg, grammar),
      optim=optim_settings(cfg),
      workdir=cfg.workdir,
      eval_fn=eval_fn if cfg.eval.num_questions > 0 else None,
      eval_every=cfg.eval.every,
      seq_len=cfg.data.seq_len, seed=cfg.seed, mesh=mesh,
      checkpoint_every=cfg.log.checkpoint_every, trace_every=cfg.log.trace_every,
      tensorboard=cfg.log.tensorboard, config=cfg.to_dict(),
      allow_config_changes=cfg.log.allow_config_changes,
      sft_sort_window=cfg.data.sft_sort_window)


def _scratch_decoder(cfg, tok, mesh):
  """The demo's decoder from `model.*`, randomly initialised (cfg.seed)."""
  mcfg = models.ModelConfig(
      vocab_size=tok.vocab_size, hidden_size=cfg.model.hidden_size,
      intermediate_size=cfg.model.intermediate_size,
      num_layers=cfg.model.num_layers, num_heads=cfg.model.num_heads,
      num_kv_heads=cfg.model.num_kv_heads, tie_embeddings=True,
      max_position_embeddings=cfg.sampling.max_len, dtype=cfg.model.dtype,
      param_dtype=cfg.model.param_dtype, remat=cfg.model.remat,
      smear_keys=cfg.model.smear_keys)
  return sharding.create_sharded(
      lambda: models.Decoder(mcfg, rngs=nnx.Rngs(cfg.seed)), mesh)


def synthetic_policy(cfg, mesh, run_dir):
  """What evaluating a synthetic-world run needs besides its checkpoint:
  (model, tokenizer, retriever over the world's corpus, prompt function).

  The tokenizer is the run's own (`run_dir/tokenizer/spm.model`, trained by
  the run), the model a fresh decoder of the config's shape to restore the
  run's parameters into, the world rebuilt from `cfg.world`.

  Raises:
    FileNotFoundError: `run_dir` has no tokenizer (not a synthetic run's
      workdir, or one that never started).
  """
  from rsearch_jax import retrieval, tokenizer as tok_lib
  from rsearch_jax.data import synthetic

  path = pathlib.Path(run_dir) / "tokenizer" / "spm.model"
  if not path.exists():
    raise FileNotFoundError(
        f"{path} is missing: {run_dir} is not the workdir of a synthetic-world "
        "run (launch/train.py writes its tokenizer there)")
  tok = tok_lib.SentencePieceTokenizer(path)
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  retriever = retrieval.BM25Retriever(world.corpus())
  style = cfg.method
  return (_scratch_decoder(cfg, tok, mesh), tok, retriever,
          lambda q: synthetic.prompt(q, style))


def _synthetic(cfg, mesh):
  """The demo world: everything is generated, trained and held out here."""
  from rsearch_jax import retrieval, tokenizer as tok_lib
  from rsearch_jax.data import copying, synthetic

  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  workdir = pathlib.Path(cfg.workdir)
  # Everything built from the world (its splits, the tokenizer trained on
  # them, the scripted cold start) follows world.seed; the run's seed only
  # the training (initialisation, data order, sampling, copy examples), so
  # a branch with another seed keeps the questions and the token ids.
  splits = synthetic_splits(world, cfg.world.seed, workdir / "data")
  corpus = world.corpus()
  retriever = retrieval.BM25Retriever(corpus)
  pretrain = world.pretraining_texts()
  style = cfg.method
  prompt_fn = lambda q: synthetic.prompt(q, style)
  tok_texts = pretrain + [d.contents() for d in corpus] + [
      prompt_fn(q.question) for q in splits["train"]]
  tok = tok_lib.SentencePieceTokenizer.train(tok_texts, cfg.model.vocab_size,
                                             workdir / "tokenizer",
                                             whole_words=world.name_words()
                                             if cfg.data.whole_word_names else ())
  model = _scratch_decoder(cfg, tok, mesh)
  # The scripted agent sees exactly the blocks the sampler will splice.
  handoff = builders.build_sampler(model, tok, cfg.sampling, retriever=retriever,
                                   method=cfg.method).handoff

  blocks: dict[str, list[int]] = {}  # block text -> the ids the sampler splices

  def searcher(engine):
    def search(query: str) -> str:
      docs = engine.search([query], cfg.sampling.top_k_docs)[0]
      ids = handoff.build_block(docs)
      text = tok.decode(ids)
      blocks[text] = ids
      return text
    return search

  # The world's own trajectories restate its corpus facts, which the model
  # then half-knows though they are labelled for search (data.sft_own_world).
  own = (_sft_examples(cfg, world, splits["train"], prompt_fn,
                       searcher(retriever), style)
         if cfg.data.sft_own_world else [])
  examples = list(own)

  def in_copy(other, questions, seed, search_all):
    """Trajectories in a copy of the world: 1-hop ones, then a few chained /
    comparison ones (data.sft_renamed_two_hop)."""
    search = searcher(retrieval.BM25Retriever(other.corpus()))
    out = []
    for multi_hop, n in ((False, cfg.data.sft_examples),
                         (True, cfg.data.sft_renamed_two_hop)):
      pool = [q for q in questions if (q.kind != "1hop") == multi_hop]
      if n:
        out += _scripted(other, synthetic.sft_questions(
            pool, len(pool), one_hop_only=False, seed=seed),
            prompt_fn, search, style, search_all, n,
            search_internal=cfg.data.sft_search_internal,
            restate=cfg.data.sft_restate,
            premature=cfg.data.sft_premature,
            compare=cfg.data.sft_compare, seed=seed)
    return out

  # Counterfactual worlds (names shuffled): their answers must be read.
  keep = {e for q in splits["heldout_entities"] for e in q.entities}
  heldout_texts = {q.question for q in splits["heldout"]}
  for k in range(cfg.data.sft_renamed_worlds):
    other, questions = _renamed_copy(world, k, keep, heldout_texts)
    examples += in_copy(other, questions, cfg.world.seed + k, True)
  # Perturbed worlds: the internal facts kept (recalled, where the method
  # recalls), the others shuffled (read). A question with the same facts as
  # a held-out one is left out.
  heldout_facts = {frozenset(q.facts) for q in splits["heldout"]}
  for k in range(cfg.data.sft_perturbed_worlds):
    other = world.perturbed(k)
    questions = [q for q in other.questions()
                 if not keep.intersection(q.entities)
                 and q.question not in heldout_texts
                 and frozenset(q.facts) not in heldout_facts]
    examples += in_copy(other, questions, cfg.world.seed + 1000 + k,
                        cfg.data.sft_search_all)
  # Blocks enter the SFT rows as the sampler's token ids: re-encoding their
  # text can merge pieces differently, and a model trained on one split
  # fails on the other.
  sft = [(prompt, [(blocks[text] if retrieved else text, retrieved)
                   for text, retrieved in segs])
         for prompt, segs in examples]
  sft += _rehearsal(world, tok, cfg.data.sft_rehearsal,
                    first_shuffle=cfg.data.pretrain_shuffles)
  longest = max(len(tok.encode(prompt_fn(q.question)))
                for q in splits["train"] + splits["heldout"])
  if longest > cfg.sampling.max_prompt_len:
    raise ValueError(f"sampling.max_prompt_len={cfg.sampling.max_prompt_len} "
                     f"is shorter than the longest prompt ({longest} tokens with "
                     f"this tokenizer of {tok.vocab_size} pieces)")
  # Packed to full rows (a text is ~80 tokens; rows hold seq_len, BOS first),
  # one packing per shuffle of the text: were the same rows seen every pass,
  # a small model would learn them as sequences (each text cued by the one
  # before it) rather than the facts, which it then could not recall alone.
  pretrain = [row for e in range(cfg.data.pretrain_shuffles)
              for row in rl_lib.pack_texts(
                  tok, world.pretraining_texts(shuffle=e), cfg.data.seq_len - 1)]
  # RL may train on the questions the cold start did not script, as
  # R1-Searcher keeps its SFT and RL questions apart. A renamed world's
  # trajectory shares a text, not an answer, with the world's question, so
  # only the world's own trajectories are left out.
  scripted = {prompt for prompt, _ in own}
  unseen = [q for q in splits["train"] if prompt_fn(q.question) not in scripted]
  # R1-Searcher's RL questions are multi-hop ones picked by difficulty;
  # "train_chained" keeps the unseen chained (2-hop) ones, "train_multihop"
  # the unseen chained and comparison ones.
  datasets = {"pretrain": pretrain, "sft": sft, "train": splits["train"],
              "train_unseen": unseen,
              "train_chained": [q for q in unseen if q.kind == "2hop"],
              "train_multihop": [q for q in unseen if q.kind != "1hop"]}
  # "train_multihop_renamed": those, and the multi-hop questions of
  # data.rl_renamed_worlds further renamed copies (none the cold start's),
  # each searching its own copy's corpus: more RL questions than the world
  # holds (139 multi-hop ones), whose answers can only be read.
  if cfg.data.rl_renamed_worlds:
    first = cfg.data.sft_renamed_worlds
    more, engines = _renamed_rl_questions(
        world, range(first, first + cfg.data.rl_renamed_worlds), keep,
        heldout_texts, seed=cfg.world.seed)
    datasets["train_multihop_renamed"] = datasets["train_multihop"] + more
    retriever = retrieval.RoutedRetriever(retriever, engines)
  if cfg.data.copy_examples:
    datasets["copy"] = copying.copy_examples(
        cfg.data.copy_examples, tok.text_piece_ids(), tok.eos_id, seed=cfg.seed)
  eval_sets = splits["heldout"][:cfg.eval.num_questions]
  return model, tok, retriever, datasets, prompt_fn, eval_sets


def _renamed_copy(world, k: int, keep, heldout_texts):
  """The k-th renamed copy of the world (the names in `keep` in place) and
  the questions a run may train on in it: none involving a held-out entity,
  repeating a held-out question's text, or stating of a name another value
  than an internal fact does (the model would trade what pretraining taught
  it for the copy's facts)."""
  from rsearch_jax.data import synthetic
  other = world.renamed(k, keep=keep)
  return other, [q for q in other.questions()
                 if not keep.intersection(q.entities)
                 and q.question not in heldout_texts
                 and not synthetic.contradicts_internal(q, other, world)]


def _renamed_rl_questions(world, copies, keep, heldout_texts, seed: int):
  """Multi-hop RL questions in the renamed copies `copies` of the world (its
  chained ones, and as many comparisons drawn at random, from those
  `_renamed_copy` allows), each naming its copy's corpus, and a BM25
  retriever per copy."""
  from rsearch_jax import retrieval
  questions, engines = [], {}
  for k in copies:
    other, allowed = _renamed_copy(world, k, keep, heldout_texts)
    key = f"renamed-{k}"
    pool = [q for q in allowed if q.kind != "1hop"]
    chained = [q for q in pool if q.kind == "2hop"]
    compared = [q for q in pool if q.kind == "comparison"]
    rng = np.random.default_rng([seed, 11, k])
    picked = [compared[i] for i in sorted(rng.choice(
        len(compared), min(len(chained), len(compared)), replace=False))]
    questions += [dataclasses.replace(q, id=f"{key}/{q.id}", corpus=key)
                  for q in chained + picked]
    engines[key] = retrieval.BM25Retriever(other.corpus())
  return questions, engines


def _rehearsal(world, tok, n: int, first_shuffle: int) -> list:
  """n pretraining texts as SFT examples (BOS, then the text, every token a
  target), from the shufflings after the pretraining stage's.

  The cold start's trajectories state few of the internal facts; without
  rehearsal the model forgets them (eval/knows/internal falls from 88% to
  3-9%, whether or not renamed worlds contradict them), and R1-Searcher++
  then has nothing to recall.
  """
  texts, shuffle = [], first_shuffle
  while len(texts) < n:
    more = world.pretraining_texts(shuffle=shuffle)
    if not more:
      raise ValueError(f"data.sft_rehearsal={n}: the world has no internal "
                       "fact to rehearse (world.internal_fraction="
                       f"{world.config.internal_fraction})")
    texts += more[:n - len(texts)]
    shuffle += 1
  return rl_lib.text_examples(tok, texts)


def synthetic_splits(world, seed: int, data_dir) -> dict[str, list]:
  """The world's question splits (`synthetic.make_splits`), as the run reads
  them: written to `data_dir/synthetic_{split}.jsonl`, registered as a seqio
  Task and loaded back through it (the same Questions, in the same order)."""
  from rsearch_jax.data import _tasks, synthetic
  splits = synthetic.make_splits(world, seed=seed)
  task = _tasks.register_synthetic_task(splits, data_dir)
  return {split: _tasks.load_synthetic_questions(task, split) for split in splits}


def _sft_examples(cfg, world, train, prompt_fn, search, style):
  """`data.sft_examples` scripted trajectories. A question whose search block
  (cut to the sampler's document budget) misses the hop's fact is skipped,
  as a rejection-sampling cold start would drop a failed trajectory."""
  from rsearch_jax.data import synthetic
  n = cfg.data.sft_examples
  pool = [q for q in train if q.kind == "1hop" or not cfg.data.sft_one_hop_only]
  candidates = synthetic.sft_questions(train, len(pool),
                                       one_hop_only=cfg.data.sft_one_hop_only,
                                       seed=cfg.world.seed)
  out = _scripted(world, candidates, prompt_fn, search, style,
                  cfg.data.sft_search_all, n,
                  search_internal=cfg.data.sft_search_internal,
                  restate=cfg.data.sft_restate,
                  premature=cfg.data.sft_premature,
                  compare=cfg.data.sft_compare, seed=cfg.world.seed)
  if len(out) < n:
    raise ValueError(f"data.sft_examples={n}: only {len(out)} scripted "
                     "trajectories found their facts; raise sampling.doc_tokens "
                     "or lower data.sft_examples")
  return out


def _scripted(world, questions, prompt_fn, search, style, search_all, n, *,
              search_internal: float = 0.0, restate: str = "none",
              premature: float = 0.0, compare: str = "two_searches",
              seed: int = 0):
  """Up to n (prompt, segments) trajectories, skipping the questions whose
  search block misses a hop's fact. Without search_all, each trajectory
  searches every fact, internal ones too, with probability search_internal
  (data.sft_search_internal; seeded)."""
  from rsearch_jax.data import synthetic
  rng = random.Random(seed)
  out = []
  for q in questions:
    every = rng.random() < search_internal
    short = premature > 0 and q.kind == "2hop" and rng.random() < premature
    try:
      segs = synthetic.scripted_trajectory(q, world, style, search,
                                           search_all=search_all or every,
                                           restate=restate, premature=short,
                                           compare=compare)
    except ValueError:
      continue
    out.append((prompt_fn(q.question), segs))
    if len(out) == n:
      break
  return out


def _r1_searcher(cfg, mesh):
  """A real model on R1-Searcher's training questions."""
  model, tok = builders.policy_from_config(cfg, mesh)
  retriever = builders.retriever_from_config(cfg)
  prompt_fn = lambda q: prompts.render_prompt(q, cfg.method, cfg.model.chat)
  from rsearch_jax.data import _tasks
  _tasks.register_qa_tasks(str(cfg.data.dir))  # R1-Searcher's sets as seqio tasks
  datasets = {"stage_1": _tasks.load_task_examples("r1_stage1"),
              "stage_2": _tasks.load_task_examples("r1_stage2")}
  # One of R1-Searcher's four eval sets reads through its seqio Task.
  eval_sets = _tasks.load_qa_file(cfg.eval.file, str(cfg.data.dir))[
      :cfg.eval.num_questions]
  return model, tok, retriever, datasets, prompt_fn, eval_sets

