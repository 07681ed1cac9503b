"""RL train-step throughput, peak memory and model FLOP utilisation against
this machine's measured matmul peak.

    python benchmarks/train_step.py [--seq_len=1024] [--batch=4] [--repeats=3]
        [--remat=both] [--logits_chunk=256] [--micro_batches=1]
        [--shapes=SmolLM2-135M,demo] [--causal_blocks=256,off]

Two model shapes with random weights: SmolLM2-135M's (30 layers, width 576,
GQA 9/3 heads, vocab 49152) and the demo's tiny decoder. One `Learner.rl_step`
(forward + backward + AdamW on a full RL batch: policy loss, k3 KL, entropy,
masked) on [batch, seq_len] rollouts, best of `--repeats`; and the forward
alone (`Learner.logprobs`, the same teacher-forced pass without gradients),
to split where the time goes. `--causal_blocks` lists the attention's
query-block sizes to compare (`models._decoder.CAUSAL_BLOCK`; "off" attends
over the full square, as before the blocks).

Each configuration runs in its own process, so its peak resident memory
(getrusage ru_maxrss, compilation included) is its own, and one that runs
out of memory is reported rather than ending the run.

Model FLOPs per step = tokens x (6 x parameters + 12 x layers x width x
seq_len): 6N for the forward and backward matmuls of every parameter (the
tied embedding counted once, as the LM head), plus attention's QK^T and PV
over the full, non-causal square. Recomputation (remat, the chunked loss's
second LM-head pass) is not counted: it is the hardware's cost, not the
model's. The float32 matmul peak is measured in the same run, before and
after the configurations (the machine is shared: the better is used).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
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
    "demo": models.ModelConfig(
        vocab_size=1024, hidden_size=192, intermediate_size=512, num_layers=4,
        num_heads=4, num_kv_heads=2, tie_embeddings=True),
}
NOMINAL_PEAK = 280.0  # GFLOP/s, float32 matmul on this machine when idle


def matmul_peak(repeats: int = 10) -> float:
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


def model_flops(cfg, b: int, t: int) -> float:
  return b * t * (6 * cfg.num_params() + 12 * cfg.num_layers * cfg.hidden_size * t)


def run_one(spec: dict) -> dict:
  """One configuration, timed in this process."""
  from rsearch_jax.models import _decoder
  _decoder.CAUSAL_BLOCK = spec["causal_block"] or 1 << 30
  cfg = SHAPES[spec["shape"]].replace(remat=bool(spec["remat"]))
  learner = Learner(models.Decoder(cfg, rngs=nnx.Rngs(0)),
                    OptimConfig(learning_rate=1e-6),
                    LossConfig(kl_coef=0.01, kl_kind="k3", entropy_coef=0.0,
                               logits_chunk=spec["logits_chunk"]),
                    micro_batches=spec["micro_batches"])
  data = batch(cfg, spec["batch"], spec["seq_len"])
  t = time.perf_counter()
  learner.rl_step(data)
  compile_s = time.perf_counter() - t
  step = min(_timed(lambda: learner.rl_step(data)) for _ in range(spec["repeats"]))
  fwd = lambda: learner.logprobs(data.tokens, data.positions).block_until_ready()
  fwd()
  forward = min(_timed(fwd) for _ in range(spec["repeats"]))
  rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  return dict(step_s=step, forward_s=forward, compile_s=compile_s, rss_gb=rss_gb,
              params=cfg.num_params(),
              flops=model_flops(cfg, spec["batch"], spec["seq_len"]))


def _spawn(spec: dict) -> dict | None:
  proc = subprocess.run([sys.executable, __file__, "--_one", json.dumps(spec)],
                        capture_output=True, text=True)
  for line in proc.stdout.splitlines()[::-1]:
    if line.startswith("{"):
      return json.loads(line)
  sys.stderr.write(f"{spec}: exit code {proc.returncode}\n{proc.stderr[-2000:]}\n")
  return None


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--seq_len", type=int, default=1024)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--remat", choices=("off", "on", "both"), default="both",
                  help="block remat for SmolLM2-135M (the demo runs without)")
  ap.add_argument("--logits_chunk", type=int, default=256)
  ap.add_argument("--micro_batches", type=int, default=1)
  ap.add_argument("--shapes", default="SmolLM2-135M,demo")
  ap.add_argument("--causal_blocks", default="256",
                  help='query-block sizes, comma-separated; "off" = no blocks')
  ap.add_argument("--_one", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args._one:
    print(json.dumps(run_one(json.loads(args._one))))
    return

  specs = []
  for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
    if shape not in SHAPES:
      raise SystemExit(f"--shapes: unknown shape {shape!r}; known: {list(SHAPES)}")
    remats = {"off": [0], "on": [1], "both": [0, 1]}[args.remat]
    for remat in remats if shape == "SmolLM2-135M" else [0]:
      for block in args.causal_blocks.split(","):
        specs.append(dict(shape=shape, remat=remat, batch=args.batch,
                          seq_len=args.seq_len, repeats=args.repeats,
                          logits_chunk=args.logits_chunk,
                          micro_batches=args.micro_batches,
                          causal_block=0 if block.strip() == "off" else int(block)))
  peak_before = matmul_peak()
  results = [(spec, _spawn(spec)) for spec in specs]
  peak_after = matmul_peak()
  peak = max(peak_before, peak_after)
  print("command: python " + " ".join(sys.argv))
  print(f"jax {jax.__version__}, {os.cpu_count()} cores; float32 matmul peak "
        f"measured {peak_before:.0f} (before) / {peak_after:.0f} (after) GFLOP/s; "
        f"MFU against {peak:.0f} and (in brackets) the nominal {NOMINAL_PEAK:.0f}\n")
  print("| model | params | remat | logits chunk | micro-batches | causal block |"
        " batch x seq | s / step | forward s | tokens/s | model TFLOP/step | MFU |"
        " peak RSS GB |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for spec, r in results:
    head = (f"| {spec['shape']} | {SHAPES[spec['shape']].num_params() / 1e6:.1f}M |"
            f" {'on' if spec['remat'] else 'off'} | {spec['logits_chunk']} |"
            f" {spec['micro_batches']} | {spec['causal_block'] or 'off'} |"
            f" {spec['batch']} x {spec['seq_len']} |")
    if r is None:
      print(head + " failed (see stderr) | | | | | |")
      continue
    tokens = spec["batch"] * spec["seq_len"]
    gflops = r["flops"] / r["step_s"] / 1e9
    print(head + f" {r['step_s']:.2f} | {r['forward_s']:.2f} |"
          f" {tokens / r['step_s']:.0f} | {r['flops'] / 1e12:.2f} |"
          f" {100 * gflops / peak:.0f}% ({100 * gflops / NOMINAL_PEAK:.0f}%) |"
          f" {r['rss_gb']:.1f} |")


if __name__ == "__main__":
  main()
