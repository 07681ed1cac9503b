"""R1-Searcher++ (arXiv 2505.17005): SFT cold start, then RL that rewards
internal knowledge when it suffices, with memorization of retrieved facts.

    python launch/train.py --config=configs/r1pp.py              # CPU demo
    python launch/train.py --config=configs/r1pp.py:smollm2
    python launch/train.py --config=configs/r1pp.py:qwen2_5_7b \\
        --config.model.path=/ckpt/Qwen2.5-7B-Instruct --config.mesh.fsdp=-1

Presets (every field: rsearch_jax/config_defaults.py):
  demo        the synthetic world on 2 CPU cores: a SentencePiece tokenizer and
              a tiny decoder trained from scratch (pretrain on the internal
              facts), SFT cold start on scripted trajectories, then RL with the
              R1-Searcher++ rewards (format, answer, fewest retrievals among
              correct rollouts) and rule-based memorization.
  smollm2     SmolLM2-135M-Instruct over wiki-vital-en (BM25) on R1-Searcher's
              stage-2 questions.
  qwen2_5_7b  the paper's scale (a local Qwen2.5-7B-Instruct directory), for a
              TPU pod.
"""

from rsearch_jax.config_defaults import base, stage

PRESETS = ("demo", "smollm2", "qwen2_5_7b")
RL_REWARDS = "format_penalty,answer_cem,group_fewest_retrievals"


def get_config(preset: str = "demo"):
  if preset not in PRESETS:
    raise ValueError(f"configs/r1pp.py: unknown preset {preset!r}; presets: "
                     f"{', '.join(PRESETS)}")
  c = base("r1pp")
  c.workdir = f"runs/r1pp_{preset}"
  c.rl.memorization = "rule"
  c.rl.loss.mem_coef = 0.1
  if preset == "demo":
    c.data.source = "synthetic"
    c.model.path = "scratch"
    c.model.update(dict(vocab_size=1024, hidden_size=192, intermediate_size=512,
                        num_layers=4, num_heads=4, num_kv_heads=2))
    c.mesh.fsdp = 1
    c.data.seq_len = 448
    c.data.sft_examples = 64
    c.sampling.update(dict(max_prompt_len=80, max_len=560, max_new_tokens=96,
                           temperature=1.0, max_searches=3, doc_block_len=160,
                           top_k_docs=2, doc_tokens=64))
    c.rl.group_size = 4
    c.rl.loss.kl_coef = 0.0
    c.curriculum = "pretrain,sft,rl"
    c.stages.pretrain = stage("pretrain", 600, "pretrain", 16, learning_rate=3e-3,
                              warmup_steps=30)
    c.stages.sft = stage("sft", 120, "sft", 8, learning_rate=1e-3, warmup_steps=10)
    c.stages.rl = stage("rl", 60, "train", 8, rewards=RL_REWARDS,
                        learning_rate=2e-5)
    c.eval.num_questions = 88
    c.eval.batch_size = 44
    c.log.checkpoint_every = 20
  else:
    c.data.source = "r1_searcher"
    c.model.add_tags = False
    # A real model's cold start needs rejection-sampled trajectories (not
    # shipped); these presets start from the instruct model with RL.
    c.curriculum = "rl"
    c.stages.rl = stage("rl", 200, "stage_2", 8, rewards=RL_REWARDS,
                        learning_rate=2e-6)
    c.eval.num_questions = 32
    if preset == "qwen2_5_7b":
      c.model.path = "/path/to/Qwen2.5-7B-Instruct"
      c.model.update(dict(dtype="bfloat16", param_dtype="bfloat16", remat=True))
      c.mesh.update(dict(data=1, fsdp=-1, tensor=1, distributed=True))
      c.rl.group_size = 16
      c.rl.micro_batches = 16
      c.rl.loss.kl_coef = 0.001
  return c
