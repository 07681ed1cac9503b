"""Prefill and decode speed of our decoder vs transformers, same weights, same run.

    python benchmarks/forward.py [--prefill_len=128] [--cache_len=512] \
        [--decode_steps=32] [--repeats=3]

Loads SmolLM2-135M-Instruct (the GGUF asset, dequantized to float32 by
transformers' own GGUF loader, and handed to our decoder through a safetensors
directory, so both run the very same weights), runs prefill (tokens/s, logits
of the last token only) and greedy one-token decode (ms/step, a KV cache of
`cache_len` slots, the steps in one jitted loop as in the sampler) at batch 1
and 16 in our JAX decoder and in transformers (PyTorch, CPU).

Fairness on a shared machine: the two sides are timed round-robin (each
repeat runs every contender once, the best repeat counts), so they see the
same load; transformers runs with 1 thread and with all cores and keeps the
faster (PyTorch's OpenMP threads collapse when the cores are oversubscribed).

The roofline column is the ideal time over the measured time, the ideal being
max(FLOPs / matmul GFLOP/s, bytes read / memory GB/s) with both peaks measured
in the same run (a 2048^3 float32 matmul, and the faster of a 256 MB GEMV and
a 256 MB copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from rsearch_jax import assets, models  # noqa: E402
from rsearch_jax.models import _hf  # noqa: E402


def race(contenders: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
  """Best wall time of each contender, timed round-robin after one warm-up."""
  for fn in contenders.values():
    fn()  # compile / warm up
  best = {name: float("inf") for name in contenders}
  for _ in range(repeats):
    for name, fn in contenders.items():
      t = time.perf_counter()
      fn()
      best[name] = min(best[name], time.perf_counter() - t)
  return best


def machine_peaks(repeats: int) -> tuple[float, float, float]:
  """(matmul GFLOP/s, GEMV read GB/s, copy GB/s) of this machine, now."""
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mat = jnp.ones((16384, 4096), jnp.float32)  # 256 MB
  vec = jnp.ones((4096,), jnp.float32)
  gemv = jax.jit(lambda m, v: m @ v)
  # In place (donated), so that the copy is not timing page faults of a
  # fresh 256 MB output buffer; reads and writes every byte once.
  scale = jax.jit(lambda m: m + 1.0, donate_argnums=0)
  buf = [jnp.ones((16384, 4096), jnp.float32)]

  def copy():
    buf[0] = scale(buf[0])
    buf[0].block_until_ready()

  t = race({"mm": lambda: mm(a).block_until_ready(),
            "gemv": lambda: gemv(mat, vec).block_until_ready(),
            "copy": copy}, repeats)
  return (2 * n**3 / t["mm"] / 1e9, mat.nbytes / t["gemv"] / 1e9,
          2 * mat.nbytes / t["copy"] / 1e9)


def with_threads(fn: Callable[[], None], threads: int) -> Callable[[], None]:
  def run():
    torch.set_num_threads(threads)
    fn()
  return run


def hf_best(fn: Callable[[], None]) -> dict[str, Callable[[], None]]:
  counts = sorted({1, os.cpu_count() or 1})
  return {f"hf{n}": with_threads(fn, n) for n in counts}


def split_hf(times: dict[str, float]) -> tuple[float, float, int]:
  """(ours, transformers' best, transformers' thread count)."""
  hf = {int(k[2:]): v for k, v in times.items() if k.startswith("hf")}
  threads = min(hf, key=hf.get)
  return times["ours"], hf[threads], threads


def load_models():
  path = assets.fetch("smollm2-135m-instruct", quiet=True)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      path.parent, gguf_file=path.name, dtype=torch.float32).eval()
  with tempfile.TemporaryDirectory() as tmp:
    # transformers refuses to re-save a GGUF-loaded model; write it ourselves.
    tensors = {k: v.numpy() for k, v in hf.state_dict().items()}
    _hf.write_safetensors(pathlib.Path(tmp) / "model.safetensors", tensors)
    (pathlib.Path(tmp) / "config.json").write_text(hf.config.to_json_string())
    ours, cfg = models.load_hf(tmp)
  return hf, ours, cfg


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--prefill_len", type=int, default=128)
  ap.add_argument("--cache_len", type=int, default=512)
  ap.add_argument("--decode_steps", type=int, default=32)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--batches", default="1,16")
  args = ap.parse_args()

  hf, ours, cfg = load_models()
  gflops_peak, gemv_peak, copy_peak = machine_peaks(max(args.repeats, 10))
  gbs_peak = max(gemv_peak, copy_peak)
  L, H, Dh, D = cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.hidden_size
  n_params = cfg.num_params()
  embed_params = cfg.vocab_size * D
  # Per token: every weight matrix but the embedding (a lookup) is one
  # multiply-add per parameter; the tied LM head multiplies by the embedding.
  body_flops = 2 * (n_params - embed_params)
  head_flops = 2 * embed_params
  graphdef, state = nnx.split(ours)

  @jax.jit
  def prefill(state, tokens, positions):
    model = nnx.merge(graphdef, state)
    return model(tokens, positions, last_only=True)[0]

  @jax.jit
  def fill_cache(state, tokens, positions, cache):
    return nnx.merge(graphdef, state)(tokens, positions, cache)[1]

  def decode(state, token, pos, cache, steps):
    # Greedy steps in a loop with the cache in the carry, as in the sampler
    # (the donated cache is updated in place).
    model = nnx.merge(graphdef, state)

    def body(_, carry):
      token, pos, cache = carry
      logits, cache = model(token, pos, cache)
      return jnp.argmax(logits, -1).astype(jnp.int32), pos + 1, cache

    return jax.lax.fori_loop(0, steps, body, (token, pos, cache))

  decode = jax.jit(decode, static_argnums=4, donate_argnums=3)

  rows = []
  rng = np.random.default_rng(0)
  for batch in map(int, args.batches.split(",")):
    t_len = args.prefill_len
    ids = rng.integers(0, cfg.vocab_size, (batch, t_len))
    toks = jnp.asarray(ids, jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(t_len), (batch, t_len))
    tids = torch.tensor(ids)

    def hf_prefill():
      with torch.no_grad():
        hf(tids, logits_to_keep=1)

    times = race({"ours": lambda: prefill(state, toks, pos).block_until_ready(),
                  **hf_best(hf_prefill)}, args.repeats)
    t_ours, t_hf, threads = split_hf(times)
    flops = (batch * t_len * body_flops + batch * head_flops
             + 2 * L * batch * H * Dh * t_len * t_len)  # QK^T and PV, causal half
    ideal = max(flops / (gflops_peak * 1e9),
                4 * n_params / (gbs_peak * 1e9))
    rows.append((f"prefill B={batch} T={t_len}", "tok/s", batch * t_len / t_ours,
                 batch * t_len / t_hf, threads, ideal / t_ours))

    # Decode: `steps` greedy tokens after a context of cache_len - steps.
    c_len, steps = args.cache_len, args.decode_steps
    ctx_ids = rng.integers(0, cfg.vocab_size, (batch, c_len - steps))
    ctx = jnp.asarray(ctx_ids, jnp.int32)
    cpos = jnp.broadcast_to(jnp.arange(c_len - steps), ctx.shape)
    cache = fill_cache(state, ctx, cpos, models.init_cache(cfg, batch, c_len))
    tok = jnp.zeros((batch, 1), jnp.int32)
    tpos = jnp.full((batch, 1), c_len - steps)
    # The whole cache is donated; keep the context's cursor on the host.
    ctx_pos, ctx_end = np.asarray(cache.pos), np.asarray(cache.end)
    live = [cache]

    def ours_decode():
      # Each run decodes the same steps again from the context: rewind the
      # cursor (the slots it rewrites are overwritten in place).
      _, _, c = decode(state, tok, tpos, live[0], steps)
      jax.block_until_ready(c)
      live[0] = dataclasses.replace(c, pos=jnp.asarray(ctx_pos),
                                    end=jnp.asarray(ctx_end))

    with torch.no_grad():
      out = hf(torch.tensor(ctx_ids), use_cache=True)
      past = out.cache if hasattr(out, "cache") else out.past_key_values
      past_arg = "cache" if hasattr(out, "cache") else "past_key_values"

      def hf_decode():
        t = torch.zeros((batch, 1), dtype=torch.long)
        for _ in range(steps):
          out = hf(t, use_cache=True, **{past_arg: past})
          t = out.logits[:, -1].argmax(-1, keepdim=True)
        past.crop(-steps)  # back to the context for the next repeat

      times = race({"ours": ours_decode, **hf_best(hf_decode)}, args.repeats)
    t_ours, t_hf, threads = split_hf(times)
    t_ours, t_hf = t_ours / steps, t_hf / steps
    kv_bytes = 2 * L * batch * c_len * cfg.num_kv_heads * Dh * 4
    flops = batch * (body_flops + head_flops) + 4 * L * batch * H * Dh * c_len
    ideal = max(flops / (gflops_peak * 1e9),
                (4 * n_params + kv_bytes) / (gbs_peak * 1e9))
    rows.append((f"decode B={batch} cache={c_len}", "ms/step", t_ours * 1e3,
                 t_hf * 1e3, threads, ideal / t_ours))

  print(f"SmolLM2-135M ({n_params / 1e6:.1f}M params, float32), "
        f"jax {jax.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}")
  print(f"machine: matmul {gflops_peak:.0f} GFLOP/s, memory {gemv_peak:.1f} GB/s "
        f"(GEMV read), {copy_peak:.1f} GB/s (copy, read + write)\n")
  print("| case | unit | rsearch_jax | transformers (threads) | speed-up | roofline |")
  print("|---|---|---|---|---|---|")
  for name, unit, ours_v, hf_v, threads, roof in rows:
    speed = ours_v / hf_v if unit == "tok/s" else hf_v / ours_v
    print(f"| {name} | {unit} | {ours_v:.1f} | {hf_v:.1f} ({threads}) | "
          f"{speed:.2f}x | {100 * roof:.0f}% |")


if __name__ == "__main__":
  main()
