"""RL train-step throughput and model FLOP utilisation against this machine's
measured matmul peak.

    python benchmarks/train_step.py [--seq_len=1024] [--batch=4] [--repeats=2]

Two model shapes with random weights: SmolLM2-135M's (30 layers, width 576,
GQA 9/3 heads, vocab 49152) and the demo's tiny decoder. One `Learner.rl_step`
(forward + backward + AdamW on a full RL batch: policy loss, k3 KL, entropy,
masked) on [batch, seq_len] rollouts. Model FLOPs per token = 6 x parameters
(+ 12 x layers x width x seq_len for attention), the usual MFU accounting;
the peak is a float32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from rsearch_jax import models  # noqa: E402
from rsearch_jax.rl import Learner, LossConfig, OptimConfig, RLBatch  # noqa: E402

SHAPES = {
    "SmolLM2-135M": models.ModelConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
        num_heads=9, num_kv_heads=3, tie_embeddings=True),
    "demo tiny": models.ModelConfig(
        vocab_size=1024, hidden_size=192, intermediate_size=512, num_layers=4,
        num_heads=4, num_kv_heads=2, tie_embeddings=True),
}


def matmul_peak(repeats: int = 5) -> float:
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def batch(cfg, b, t, seed=0) -> RLBatch:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.vocab_size, (b, t)).astype(np.int32)
  positions = np.tile(np.arange(t, dtype=np.int32), (b, 1))
  mask = np.ones((b, t), np.int32)
  mask[:, :t // 8] = 0                      # prompt
  mask[:, t // 2:t // 2 + t // 8] = 0       # a retrieved document
  lp = np.where(mask, -rng.uniform(0.5, 3, (b, t)), 0).astype(np.float32)
  adv = (rng.normal(size=(b, 1)) * mask).astype(np.float32)
  return RLBatch(tokens, positions, mask, lp, lp, adv)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--seq_len", type=int, default=1024)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--repeats", type=int, default=2)
  args = ap.parse_args()
  peak = matmul_peak()
  print(f"jax {jax.__version__}, {os.cpu_count()} cores; float32 matmul peak "
        f"{peak:.0f} GFLOP/s (measured now)\n")
  print(f"| model | params | batch x seq | s / step | tokens/s | model TFLOP/step |"
        f" MFU |")
  print("|---|---|---|---|---|---|---|")
  for name, cfg in SHAPES.items():
    learner = Learner(models.Decoder(cfg, rngs=nnx.Rngs(0)),
                      OptimConfig(learning_rate=1e-6),
                      LossConfig(kl_coef=0.01, kl_kind="k3", entropy_coef=0.0))
    data = batch(cfg, args.batch, args.seq_len)
    learner.rl_step(data)  # compile
    best = min(_timed(lambda: learner.rl_step(data)) for _ in range(args.repeats))
    tokens = args.batch * args.seq_len
    n = cfg.num_params()
    flops = tokens * (6 * n + 12 * cfg.num_layers * cfg.hidden_size * args.seq_len)
    print(f"| {name} | {n / 1e6:.1f}M | {args.batch} x {args.seq_len} | {best:.2f} |"
          f" {tokens / best:.0f} | {flops / 1e12:.2f} | "
          f"{100 * flops / best / 1e9 / peak:.0f}% |")


if __name__ == "__main__":
  main()
