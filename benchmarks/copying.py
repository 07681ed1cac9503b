"""How fast the demo's scratch decoder learns to copy from its context.

    python benchmarks/copying.py [--steps=300] [--lr=3e-3] [--layers=4]
        [--hidden=192] [--heads=4] [--every=50] [--reference]

Reading a retrieved document is in-context copying: the answer is a name
that stands a few tokens earlier. This trains the demo-shaped decoder
(`configs/r1pp.py`'s model: 4 layers, width 192, 4 query / 2 KV heads, vocab
1024, tied embeddings) from scratch, with AdamW and a warmup-cosine schedule
as the demo's stages use, on two synthetic copy tasks, and prints the loss on
the copied tokens every `--every` steps, against chance (ln 1020 nats):

  fixed offset     `noise(16), x(12), SEP, x`: x always stands 13 positions
                   back, so a positional attention head suffices.
  content-based    `noise(random length), x(8-29 tokens), SEP, x`: the
                   offset varies, so each token must be found by matching
                   the previous one (an induction circuit), as a document's
                   answer is found.

A third column trains the same decoder with `ModelConfig.smear_keys` (each
key mixed with the previous token's key by a learned per-head weight, as in
Olsson et al. 2022) on the content-based task.

Batches of 32 random rows of 96 tokens, the loss on every copied token but
the first. `--reference` also trains transformers' LlamaForCausalLM
(PyTorch) of the same shape, with the same optimizer, schedule and batches,
on the content-based task: the peer that says whether a slow curve is this
decoder's or the architecture's (PyTorch and transformers come with the
`test` extra). The numbers are learning curves, not
timings.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rsearch_jax import models

VOCAB, WIDTH, ROWS, SEP = 1024, 96, 32, 3


def _copy_rows(rng: np.random.Generator, copy_len, noise_len):
  """ROWS rows `noise, x, SEP, x` (lengths drawn by the two callables) and
  the mask of the copied tokens after the first."""
  tokens = np.zeros((ROWS, WIDTH), np.int32)
  mask = np.zeros((ROWS, WIDTH), np.float32)
  for i in range(ROWS):
    n = copy_len(rng)
    pre = noise_len(rng, n)
    x = rng.integers(4, VOCAB, n)
    seq = np.concatenate([rng.integers(4, VOCAB, pre), x, [SEP], x])
    tokens[i, :len(seq)] = seq
    mask[i, pre + n + 2:len(seq)] = 1
  return tokens, mask


def fixed_offset(rng: np.random.Generator):
  """Rows `noise(16), x(12), SEP, x`: the copy's offset is always 13."""
  return _copy_rows(rng, lambda r: 12, lambda r, n: 16)


def content_based(rng: np.random.Generator):
  """Rows `noise(random), x(8-29), SEP, x`: the copy's offset varies."""
  return _copy_rows(rng, lambda r: int(r.integers(8, 30)),
                    lambda r, n: int(r.integers(0, WIDTH - 2 * n - 2)))


def learning_curve(task, args, smear_keys: bool = False
                   ) -> list[tuple[int, float, float]]:
  """[(step, copied-token loss on a fixed held-out batch, seconds)]."""
  cfg = models.ModelConfig(
      vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=512,
      num_layers=args.layers, num_heads=args.heads,
      num_kv_heads=max(args.heads // 2, 1), tie_embeddings=True,
      max_position_embeddings=WIDTH, smear_keys=smear_keys)
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, 10, args.steps)
  opt = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=0.0),
                      wrt=nnx.Param)
  positions = jnp.broadcast_to(jnp.arange(WIDTH), (ROWS, WIDTH))

  def copied_loss(model, tokens, mask):
    logits, _ = model(tokens, positions)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))[:, :-1]
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    return (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()

  @nnx.jit
  def step(model, opt, tokens, mask):
    loss, grads = nnx.value_and_grad(copied_loss)(model, tokens, mask)
    opt.update(model, grads)
    return loss

  held_out = tuple(map(jnp.asarray, task(np.random.default_rng(1))))
  evaluate = nnx.jit(copied_loss)
  rng = np.random.default_rng(0)
  curve, start = [], time.perf_counter()
  for s in range(args.steps + 1):
    if s % args.every == 0:
      curve.append((s, float(evaluate(model, *held_out)),
                    time.perf_counter() - start))
    if s < args.steps:
      step(model, opt, *map(jnp.asarray, task(rng)))
  return curve


def reference_curve(task, args) -> list[tuple[int, float, float]]:
  """`learning_curve` for transformers' Llama of the same shape (PyTorch)."""
  import math
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  torch.manual_seed(0)
  model = LlamaForCausalLM(LlamaConfig(
      vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=512,
      num_hidden_layers=args.layers, num_attention_heads=args.heads,
      num_key_value_heads=max(args.heads // 2, 1), tie_word_embeddings=True,
      max_position_embeddings=WIDTH, rms_norm_eps=1e-6))
  opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
  # optax.warmup_cosine_decay_schedule(0, lr, 10, steps), step by step.
  warm = lambda s: s / 10 if s < 10 else 0.5 * (
      1 + math.cos(math.pi * (s - 10) / max(args.steps - 10, 1)))
  sched = torch.optim.lr_scheduler.LambdaLR(opt, warm)

  def copied_loss(tokens, mask):
    tokens, mask = torch.as_tensor(tokens).long(), torch.as_tensor(mask)
    logits = model(tokens).logits.float()[:, :-1]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1),
        reduction="none").view(ROWS, WIDTH - 1)
    return (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()

  held_out = task(np.random.default_rng(1))
  rng = np.random.default_rng(0)
  curve, start = [], time.perf_counter()
  for s in range(args.steps + 1):
    if s % args.every == 0:
      with torch.no_grad():
        curve.append((s, float(copied_loss(*held_out)),
                      time.perf_counter() - start))
    if s < args.steps:
      loss = copied_loss(*task(rng))
      opt.zero_grad()
      loss.backward()
      opt.step()
      sched.step()
  return curve


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--hidden", type=int, default=192)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--every", type=int, default=50)
  parser.add_argument("--reference", action="store_true",
                      help="also train transformers' Llama on content-based")
  args = parser.parse_args()
  curves = {name: learning_curve(task, args) for name, task in
            (("fixed offset", fixed_offset), ("content-based", content_based))}
  curves["content-based, smeared keys"] = learning_curve(
      content_based, args, smear_keys=True)
  if args.reference:
    curves["content-based, transformers"] = reference_curve(content_based, args)
  print(f"decoder: {args.layers} layers, width {args.hidden}, {args.heads} "
        f"heads; AdamW lr {args.lr}, {args.steps} steps of {ROWS}x{WIDTH}")
  print(f"loss on the copied tokens (nats; chance ln {VOCAB - 4} = "
        f"{np.log(VOCAB - 4):.2f})\n")
  print("| step | " + " | ".join(curves) + " |")
  print("|---:|" + "---:|" * len(curves))
  for i, (s, _, _) in enumerate(next(iter(curves.values()))):
    print(f"| {s} | " + " | ".join(f"{c[i][1]:.2f}" for c in curves.values())
          + " |")


if __name__ == "__main__":
  main()
