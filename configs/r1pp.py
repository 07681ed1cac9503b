"""R1-Searcher++ (arXiv 2505.17005): SFT cold start, then RL that rewards
internal knowledge when it suffices, with memorization of retrieved facts.

    python launch/train.py --config=configs/r1pp.py              # CPU demo
    python launch/train.py --config=configs/r1pp.py:smollm2
    python launch/train.py --config=configs/r1pp.py:qwen2_5_7b \\
        --config.model.path=/ckpt/Qwen2.5-7B-Instruct --config.mesh.fsdp=-1

Presets (every field: rsearch_jax/config_defaults.py):
  demo        the synthetic world on 2 CPU cores: a SentencePiece tokenizer and
              a tiny decoder trained from scratch (pretrain on the internal
              facts), SFT cold start on scripted trajectories that recall
              internal facts and search the others, then RL with the
              R1-Searcher++ rewards (format, answer, fewest retrievals among
              correct rollouts) and rule-based memorization.
  smollm2     SmolLM2-135M-Instruct over wiki-vital-en (BM25) on R1-Searcher's
              stage-2 questions.
  qwen2_5_7b  the paper's scale (a local Qwen2.5-7B-Instruct directory), for a
              TPU pod.
"""

from rsearch_jax.config_defaults import base, pod_scale, stage, synthetic_demo

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
    synthetic_demo(c)
    # R1-Searcher++'s cold start teaches both sources: the world's own
    # trajectories recall internal facts in <internal> tags and search the
    # rest (the renamed worlds' facts are unknown, so those search all).
    c.data.sft_search_all = False
    c.curriculum = "copy,pretrain,sft,rl"
    c.stages.rl = stage("rl", 35, "train_unseen", 8, rewards=RL_REWARDS,
                        learning_rate=5e-5)
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
      pod_scale(c)
  return c
