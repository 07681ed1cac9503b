"""Every config field, with its default; `configs/*.py` start from `base()`.

The config reference (README "Config reference" mirrors this):

  method              "r1" (R1-Searcher tags) | "r1pp" (R1-Searcher++ tags)
  seed                seed of the run's training (initialisation, data order,
                      sampling, copy examples); the synthetic world's data
                      follow world.seed
  workdir             checkpoints, metrics.jsonl, TensorBoard, plots
  curriculum          stage names in order, comma-separated
                      ("copy,pretrain,sft,rl")
  stages.NAME.kind    "pretrain" | "sft" | "rl"
  stages.NAME.steps / batch_size / learning_rate / warmup_steps
  stages.NAME.data    dataset key ("pretrain", "sft", "train", "stage_1", ...;
                      synthetic "train_unseen": the training questions the
                      world's own cold-start trajectories did not script,
                      "train_chained": the chained (2-hop) ones among them,
                      "train_multihop": the chained and comparison ones)
  stages.NAME.rewards comma-separated reward names (rsearch_jax.rewards)
  model.path          "asset:NAME", .gguf file or HF dir (real models);
                      "scratch" for the demo's tiny model
  model.vocab_size / hidden_size / intermediate_size / num_layers /
    num_heads / num_kv_heads   the scratch model (demo)
  model.smear_keys    smeared keys in the scratch model (ModelConfig.smear_keys)
  model.dtype / param_dtype / remat / chat ("chatml" | "none")
  model.add_tags      tags as new single tokens (True) or as plain text
  mesh.data / fsdp / tensor / distributed
  retriever.kind / corpus / url / protocol
  sampling.max_prompt_len / max_len / max_new_tokens / temperature / top_k /
    top_p / max_searches / doc_block_len / top_k_docs / doc_tokens
  sampling.tag_grammar  the answer, query and internal spans open one at a
                      time and close with their own tag (banned tags get
                      probability 0 in sampling and in the RL loss alike;
                      needs the tags as single tokens)
  rl.group_size       rollouts per prompt
  rl.advantage        "reinforce_pp" | "group_norm" | "grpo"
  rl.whiten           normalise advantages over the batch's sampled tokens
  rl.micro_batches    gradient accumulation
  rl.length_groups    an update's rollouts sorted by length and run as this
                      many passes, each as wide as its own longest row: the
                      same update with less padding (needs micro_batches=1)
  rl.skip_zero_gradient  those passes leave out the rollouts whose gradient
                      is exactly 0 (no sampled token; or advantage 0 with
                      no KL or entropy loss term): the same update, fewer
                      passes; metric grad_rows is the share left in
  rl.mini_batches     optimizer updates per RL step, each on that fraction
                      of the step's rollouts
  rl.epochs           passes over a step's rollouts (PPO epochs); with
                      mini_batches, the clipped ratio bounds the updates
                      after the first
  rl.memorization     "none" | "rule" | "policy" (R1-Searcher++ rewriter)
  rl.fit_multiple     an update is as wide as its longest row, rounded up to
                      this multiple (0: always sampling.max_len, or
                      data.seq_len for pretrain / sft stages)
  rl.loss.*           clip_eps, clip_eps_high, kl_coef, kl_kind ("k1_reward" |
                      "k2" | "k3"), entropy_coef, aggregation ("token_mean" |
                      "seq_mean_token_mean" | "seq_mean_token_sum"), mem_coef
                      (mu), mask_documents (False only for the ablation),
                      logits_chunk (sequence slots whose logits exist at once
                      in every stage's loss; 0: all; numerically the same)
  optim.schedule      "cosine" | "constant" after each stage's linear warmup
  optim.min_lr_ratio  final / peak learning rate of the cosine decay
  optim.weight_decay / b1 / b2 / eps   AdamW
  optim.grad_clip     global gradient-norm clipping (0: off)
  data.source         "synthetic" | "r1_searcher"
  data.dir            R1-Searcher data folder (r1_searcher)
  data.seq_len        sequence length of pretrain / sft batches
  data.sft_examples / sft_one_hop_only / sft_search_all   the cold start
  data.sft_search_internal  without sft_search_all, the share of the
                      trajectories (in the world and its perturbed copies)
                      that search every fact, the internal ones too
  data.sft_restate    "none" | "chained" | "every_hop": "chained", the
                      scripted agent restates a chained question after its
                      first hop, as the 1-hop question that remains;
                      "every_hop", after every hop of every question it
                      writes the question that remains, so each choice
                      between searching again and answering follows a
                      question (synthetic.scripted_trajectory's `restate`)
  data.sft_premature  the share of the cold start's chained trajectories in
                      which the agent stops after the first hop and answers
                      the bridge (wrong): an agent that stops one hop short
  data.sft_compare    "two_searches" | "one_search": how the scripted agent
                      looks up a comparison whose facts it searches; with
                      "one_search" it writes the question out, searches
                      both names in one query, then compares the years in
                      the question's direction
                      (synthetic.scripted_trajectory's `compare`)
  data.sft_own_world  the cold start includes sft_examples trajectories in
                      the world itself (synthetic; False: only in the
                      renamed / perturbed worlds)
  data.sft_renamed_worlds   cold-start trajectories (up to sft_examples each)
                      in that many worlds with shuffled names (synthetic)
  data.sft_perturbed_worlds cold-start trajectories (up to sft_examples each)
                      in that many worlds with the internal facts kept and
                      the others shuffled (synthetic: World.perturbed)
  data.sft_renamed_two_hop  plus that many 2-hop / comparison trajectories
                      in each renamed or perturbed world
  data.rl_renamed_worlds    the dataset "train_multihop_renamed": the world's
                      unseen multi-hop questions and those of that many
                      further renamed copies, each searching its copy's
                      corpus (synthetic; more RL questions than the world's)
  data.whole_word_names     every name word one token (synthetic tokenizer)
  data.pretrain_shuffles    the synthetic pretraining text in that many
                      shufflings, each packed into its own rows
  data.sft_rehearsal  that many pretraining texts (further shufflings, BOS
                      first, every token a target) mixed into the SFT set,
                      so the cold start keeps the internal facts (synthetic)
  data.sft_sort_window  SFT batches drawn in length buckets: each window of
                      this many batches sorted by length, then the batches
                      shuffled (less padding; 0: plain shuffle)
  data.copy_examples  random-token copy examples in the dataset "copy" (a
                      stage of kind "sft" on it is the demo's copy warm-up;
                      rsearch_jax.data.copying)
  world.*             the synthetic world (rsearch_jax.data.synthetic.WorldConfig);
                      world.seed also seeds its question splits, the
                      tokenizer trained on them and the scripted cold start
  eval.num_questions / batch_size / file (a QA JSONL; real-model runs)
  eval.every          also evaluate every this many steps within a stage (a
                      summary row "NAME@STEP", and every evaluation plotted
                      in eval_curves.png; 0: after each stage only)
  eval.rewards        rewards scoring held-out rollouts ("" = the last RL
                      stage's), reported as eval/reward
  log.checkpoint_every / trace_every / tensorboard
  log.allow_config_changes  resume a workdir whose checkpoint was written
                      under a config differing in more than log.* / workdir
                      (branching on purpose; the changes are warned about);
                      False: such a resume is an error naming each change
"""

from __future__ import annotations

import ml_collections


def stage(kind: str, steps: int, data: str, batch_size: int, *,
          rewards: str = "", learning_rate: float = 1e-6,
          warmup_steps: int = 0) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      kind=kind, steps=steps, data=data, batch_size=batch_size,
      rewards=rewards, learning_rate=learning_rate, warmup_steps=warmup_steps))


def base(method: str) -> ml_collections.ConfigDict:
  """All fields at their defaults (a real-model run; presets override)."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.workdir = f"runs/{method}"
  c.curriculum = ""
  c.stages = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      path="asset:smollm2-135m-instruct", vocab_size=1024, hidden_size=256,
      intermediate_size=512, num_layers=4, num_heads=4, num_kv_heads=2,
      dtype="float32", param_dtype="float32", remat=False, chat="chatml",
      add_tags=True, smear_keys=False))
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1,
                                          distributed=False))
  c.retriever = ml_collections.ConfigDict(dict(
      kind="bm25", corpus="asset:wiki-vital-en", url="", protocol="r1searcher"))
  c.sampling = ml_collections.ConfigDict(dict(
      max_prompt_len=384, max_len=1024, max_new_tokens=256, temperature=1.0,
      top_k=0, top_p=1.0, max_searches=8, doc_block_len=200, top_k_docs=3,
      doc_tokens=60, tag_grammar=False))
  c.rl = ml_collections.ConfigDict(dict(
      group_size=8, advantage="reinforce_pp", whiten=False, micro_batches=1,
      length_groups=1, skip_zero_gradient=True, mini_batches=1, epochs=1,
      memorization="none", fit_multiple=64))
  c.rl.loss = ml_collections.ConfigDict(dict(
      clip_eps=0.2, clip_eps_high=0.2, kl_coef=0.0, kl_kind="k3",
      entropy_coef=0.0, aggregation="token_mean", mem_coef=0.0,
      mask_documents=True, logits_chunk=256))
  # AdamW of every stage (rl.OptimConfig); learning rate, warmup and length
  # are the stage's own (stages.NAME.*).
  c.optim = ml_collections.ConfigDict(dict(
      schedule="cosine", min_lr_ratio=0.1, weight_decay=0.0, b1=0.9, b2=0.95,
      eps=1e-8, grad_clip=1.0))
  c.data = ml_collections.ConfigDict(dict(
      source="r1_searcher", dir="../shared/data/r1_searcher", seq_len=256,
      sft_examples=64, sft_own_world=True, sft_one_hop_only=True,
      sft_search_all=True, sft_search_internal=0.0, sft_restate="none",
      sft_premature=0.0, sft_compare="two_searches",
      sft_renamed_worlds=0, sft_perturbed_worlds=0, sft_renamed_two_hop=0,
      rl_renamed_worlds=0,
      whole_word_names=False,
      copy_examples=0, pretrain_shuffles=1, sft_rehearsal=0,
      sft_sort_window=0))
  c.world = ml_collections.ConfigDict(dict(
      seed=0, num_people=50, num_films=25, num_companies=15, num_cities=10,
      married_fraction=0.5, internal_fraction=0.5, pretrain_repeats=30,
      sentences_per_text=8))
  c.eval = ml_collections.ConfigDict(dict(
      num_questions=64, batch_size=16, every=0,
      file="../shared/data/r1_searcher/eval_set/bamboogle.jsonl", rewards=""))
  c.log = ml_collections.ConfigDict(dict(checkpoint_every=25, trace_every=10,
                                         tensorboard=True,
                                         allow_config_changes=False))
  return c


def synthetic_demo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The CPU demo's shared settings (both methods): the synthetic world, a
  tiny scratch model, its pretraining and SFT cold-start stages."""
  c.data.source = "synthetic"
  c.model.path = "scratch"
  c.model.update(dict(vocab_size=1024, hidden_size=192, intermediate_size=512,
                      num_layers=4, num_heads=4, num_kv_heads=2))
  # Smeared keys and the copy warm-up let this model read its documents
  # (docs/demo_history.md).
  c.model.smear_keys = True
  c.mesh.fsdp = 1
  c.data.seq_len = 448
  c.data.copy_examples = 8000
  c.data.sft_examples = 100
  c.data.sft_renamed_worlds = 24
  # Every name word one token: a name is copied into a query or an answer
  # as one piece (docs/demo_history.md).
  c.data.whole_word_names = True
  # Up to ~140 tokens of its own in a two-hop trajectory that restates the
  # question after each hop. RL samples at temperature 0.7: at 1.0 this
  # cold start's rollouts were mostly malformed (format penalty -0.5 to
  # -0.8 a rollout) and RL lowered held-out EM (51.1 -> 37.5 for
  # R1-Searcher; docs/demo_history.md).
  c.sampling.update(dict(max_prompt_len=80, max_len=560, max_new_tokens=150,
                         temperature=0.7, max_searches=3, doc_block_len=160,
                         top_k_docs=2, doc_tokens=64))
  c.rl.group_size = 8
  # The rollouts end anywhere from ~120 slots (no search) to ~370 (two);
  # four passes over the length-sorted rows cut an update to ~0.6x the
  # time of one pass at the longest row's width (BENCHMARKS.md).
  c.rl.length_groups = 4
  # Copy warm-up: random-token copies (rsearch_jax.data.copying) build the
  # induction circuit that reading a document needs, which the facts alone
  # never force (every fact can be memorized).
  c.stages.copy = stage("sft", 200, "copy", 32, learning_rate=3e-3,
                        warmup_steps=10)
  # 72 packed rows of ~400 tokens per pass over the pretraining text, each
  # pass another shuffle (no row repeats in 150 steps): then the model
  # completes most internal facts alone (eval/knows/internal: 80% after 150
  # steps, 86% after 200), which it did not after 100 steps over one fixed
  # packing, learned as sequences. The stage lengths here and in the RL
  # stages fit the whole curriculum in 20 minutes on 2 CPU cores.
  c.data.pretrain_shuffles = 50
  c.stages.pretrain = stage("pretrain", 150, "pretrain", 16, learning_rate=3e-3,
                            warmup_steps=10)
  # Cold start: scripted trajectories, deliberately imperfect: 1-hop ones
  # (100 in the world, up to 100 in each of 24 renamed copies of it, whose
  # answers can only be read from the documents, none contradicting an
  # internal fact, and in each of 12 perturbed copies, whose internal facts
  # are the world's and the others shuffled) and only 6 multi-hop ones per
  # copy (216 of ~3,500): RL has to make the 2-hop strategies work. After
  # every hop the agent restates the question that remains, so the choice
  # to search again or answer follows a question rather than ~150 tokens
  # of documents (held-out EM after the cold start 31.8 -> 52.3 for
  # R1-Searcher++, 35.2 -> 51.1 for R1-Searcher). Mixed with 1,000
  # pretraining texts: without them the cold start forgets the internal
  # facts (eval/knows/internal 88% -> 3-9%), with them it keeps them.
  # Batches in length buckets of 16 (less padding).
  c.data.sft_perturbed_worlds = 12
  c.data.sft_renamed_two_hop = 6
  c.data.sft_restate = "every_hop"
  c.data.sft_rehearsal = 1000
  c.data.sft_sort_window = 16
  # 1,400 steps: at 700 a restating cold start (then restating chained
  # questions only) sampled much worse (format penalty -0.84 a rollout
  # against -0.41; docs/demo_history.md).
  c.stages.sft = stage("sft", 1400, "sft", 8, learning_rate=1e-3, warmup_steps=10)
  c.eval.num_questions = 88
  c.eval.batch_size = 44
  c.log.checkpoint_every = 20
  return c


def pod_scale(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The papers' scale: a local 7B checkpoint, bfloat16, remat, FSDP over a
  multi-host pod."""
  c.model.path = "/path/to/Qwen2.5-7B-Instruct"
  c.model.update(dict(dtype="bfloat16", param_dtype="bfloat16", remat=True))
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1, distributed=True))
  c.rl.group_size = 16
  c.rl.micro_batches = 16
  c.rl.loss.kl_coef = 0.001
  return c
