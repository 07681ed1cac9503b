"""R1-Searcher (arXiv 2503.05592): two-stage outcome RL, no SFT in the paper:
stage 1 rewards calling search in the right format, stage 2 rewards the answer.

    python launch/train.py --config=configs/r1.py                # CPU demo
    python launch/sample.py --config=configs/r1.py:smollm2       # search traces
    python launch/train.py --config=configs/r1.py:smollm2        # stage-1 RL on CPU
    python launch/train.py --config=configs/r1.py:qwen2_5_7b --config.model.path=...

Presets (every field: rsearch_jax/config_defaults.py):
  demo        the synthetic world (as configs/r1pp.py:demo) with the R1-Searcher
              curriculum: stage 1 retrieval + format reward, stage 2 F1 reward.
              A tiny model trained from scratch never writes the tags by
              itself, so the demo gives it R1-Searcher++'s scripted cold
              start (a documented deviation from the paper), with every fact
              searched: R1-Searcher has no notion of internal knowledge.
  smollm2     SmolLM2-135M-Instruct (GGUF asset) over wiki-vital-en with BM25;
              tags stay plain text the model can already write; stage 1 on
              R1-Searcher's stage-1 questions.
  qwen2_5_7b  the paper's scale (a local Qwen2.5-7B directory) for a TPU pod.
"""

from rsearch_jax.config_defaults import base, pod_scale, stage, synthetic_demo

PRESETS = ("demo", "smollm2", "qwen2_5_7b")


def get_config(preset: str = "demo"):
  if preset not in PRESETS:
    raise ValueError(f"configs/r1.py: unknown preset {preset!r}; presets: "
                     f"{', '.join(PRESETS)}")
  c = base("r1")
  c.workdir = f"runs/r1_{preset}"
  if preset == "demo":
    synthetic_demo(c)
    c.curriculum = "copy,pretrain,sft,rl_stage1,rl_stage2"
    c.stages.rl_stage1 = stage("rl", 5, "train_unseen", 8,
                               rewards="retrieval,format", learning_rate=5e-5)
    # Stage 2 at a higher learning rate: at 5e-5 (cosine-decayed over 35
    # steps) the greedy policy barely moves (docs/demo_history.md); stage 1
    # stays low, as at 2e-4 it collapses every question to one search.
    # Fewer RL steps than R1-Searcher++'s 35 in all: every rollout searches,
    # so a step costs about 1.5x as much. The cold start already searches
    # once per question in the right format, which is all stage 1 rewards.
    c.stages.rl_stage2 = stage("rl", 20, "train_unseen", 8,
                               rewards="f1,format_penalty", learning_rate=2e-4)
  else:
    c.data.source = "r1_searcher"
    c.model.add_tags = False
    c.sampling.update(dict(max_prompt_len=384, max_len=1024, max_new_tokens=256,
                           max_searches=4, doc_block_len=200, top_k_docs=3,
                           doc_tokens=60))
    c.curriculum = "rl_stage1,rl_stage2"
    c.stages.rl_stage1 = stage("rl", 30, "stage_1", 4, rewards="retrieval,format",
                               learning_rate=2e-6)
    c.stages.rl_stage2 = stage("rl", 100, "stage_2", 4, rewards="f1,format_penalty",
                               learning_rate=2e-6)
    c.eval.num_questions = 8
    c.eval.batch_size = 8
    if preset == "smollm2":
      c.curriculum = "rl_stage1"
    if preset == "qwen2_5_7b":
      pod_scale(c)
  return c
