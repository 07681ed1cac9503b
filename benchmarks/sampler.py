"""The sampler's speed: decode throughput vs transformers, and the hand-off cost.

    python benchmarks/sampler.py [--new_tokens=128] [--repeats=2]

All on SmolLM2-135M-Instruct (the GGUF asset, float32), greedy, in one run:

1. Decode: tokens/s of our jitted loop (prefill + `new_tokens` steps, no stop
   tokens) vs transformers `generate` (min = max = `new_tokens`), batch 1 and 16.
2. The hand-off: rollouts of batch 16 in which "." ends a query (so rows search
   about once a sentence) with an instant retriever, three ways:
     off      retrieval disabled ("." is an ordinary token);
     in-loop  the library's sampler: io_callback inside the while_loop, the
              asking rows' blocks spliced by one chunked forward pass;
     segments the alternative: the loop returns to Python whenever a row needs
              a search, Python retrieves, a jitted splice writes the blocks,
              the loop resumes.
   The two search modes must give identical tokens (checked). The table shows
   the time beyond `off`, next to what the document tokens would cost as a
   prefill (their count / measured prefill tokens/s).
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

from rsearch_jax import assets, models, tokenizer  # noqa: E402
from rsearch_jax.sampling import (DocumentFormat, Sampler,  # noqa: E402
                                  SamplingConfig, StopTokens, decode_step,
                                  generate, prefill)
from rsearch_jax.sampling._loop import splice  # noqa: E402
from rsearch_jax.sampling._loop import _ends_with  # noqa: E402
from rsearch_jax.testing import DictRetriever  # noqa: E402

PROMPTS = [
    "The history of the city begins", "Photosynthesis is the process",
    "In the early morning the market", "The theory of relativity explains",
    "A good recipe for bread needs", "The river flows through the valley",
    "Computers store information as", "The ancient library was famous",
    "Mountains are formed when", "The orchestra began to play",
    "Bees communicate with each other", "The first railway was built",
    "Volcanoes erupt because", "The museum opened a new exhibit",
    "Coffee is grown in many countries", "The ship left the harbour",
]


def best_time(fn, repeats: int) -> float:
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def left_pad(tok, texts, length):
  ids = np.full((len(texts), length), tok.pad_id, np.int32)
  mask = np.zeros((len(texts), length), np.int32)
  for i, t in enumerate(texts):
    e = tok.encode(t)
    ids[i, length - len(e):], mask[i, length - len(e):] = e, 1
  return ids, mask


def decode_benchmark(model, tok, hf, batch, new_tokens, repeats):
  import torch
  texts = (PROMPTS * 2)[:batch]
  p = 16
  ids, mask = left_pad(tok, texts, p)
  cfg = SamplingConfig(max_prompt_len=p, max_len=p + new_tokens,
                       max_new_tokens=new_tokens, temperature=0.0)
  stops = StopTokens(stop=(), query_end=None, pad_id=tok.pad_id)
  graphdef, params = nnx.split(model)
  run = lambda: generate(graphdef, params, jnp.asarray(ids), jnp.asarray(mask),
                         jax.random.key(0), jnp.arange(batch), config=cfg,
                         stops=stops, handoff=None).tokens.block_until_ready()
  ours = best_time(run, repeats)
  ours_tokens = np.asarray(run())[:, p:]
  with torch.no_grad():
    t_ids, t_mask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask)
    gen = lambda: hf.generate(input_ids=t_ids, attention_mask=t_mask,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=tok.pad_id)
    theirs = best_time(gen, repeats)
    hf_tokens = gen()[:, p:].numpy()
  agree = float((ours_tokens == hf_tokens).mean())
  return batch * new_tokens / ours, batch * new_tokens / theirs, agree


# --- the alternative hand-off: return to Python between segments ------------


def segmented_generate(sampler: Sampler, prompts_text):
  """Same rollouts as `sampler(prompts_text)`, but the loop exits to Python
  whenever a row needs a search."""
  cfg, stops = sampler.config, sampler.stops
  ids, mask = sampler.encode_prompts(prompts_text)
  graphdef, params = nnx.split(sampler.model)
  row_ids = jnp.arange(ids.shape[0])
  state = _prefill(graphdef, params, jnp.asarray(ids), jnp.asarray(mask),
                   jax.random.key(0), cfg=cfg, stops=stops)
  sampler.handoff.reset()
  while True:
    state = _run_until_search(graphdef, params, state, row_ids, cfg=cfg,
                              stops=stops, max_steps=cfg.max_len - ids.shape[1])
    need = np.asarray(_needs_search(state, stops))
    if not need.any():
      return state
    block, block_len, ran = sampler.handoff(
        state.tokens, state.cursor, need, state.num_searches, row_ids,
        state.step)
    state = _splice(graphdef, params, state, jnp.asarray(need),
                    jnp.asarray(block), jnp.asarray(block_len), jnp.asarray(ran),
                    cfg=cfg)


def _needs_search(s, stops):
  asked = jnp.zeros_like(s.done)
  for seq in stops.query_end:
    asked |= _ends_with(s.tokens, s.loss_mask, s.cursor, seq)
  return ~s.done & asked


@jax.jit(static_argnames=("graphdef", "cfg"))
def _splice(graphdef, params, state, need, block, block_len, ran, *, cfg):
  return splice(nnx.merge(graphdef, params), state, need, block, block_len,
                ran, cfg)


@jax.jit(static_argnames=("graphdef", "cfg", "stops"))
def _prefill(graphdef, params, ids, mask, rng, *, cfg, stops):
  return prefill(nnx.merge(graphdef, params), ids, mask, rng, cfg, stops)


@jax.jit(static_argnames=("graphdef", "cfg", "stops", "max_steps"))
def _run_until_search(graphdef, params, state, row_ids, *, cfg, stops, max_steps):
  model = nnx.merge(graphdef, params)
  cond = lambda s: (jnp.any(~s.done) & (s.step < max_steps)
                    & ~jnp.any(_needs_search(s, stops)))
  body = lambda s: decode_step(model, s, cfg, stops, None, row_ids)
  return jax.lax.while_loop(cond, body, state)


def handoff_benchmark(model, tok, new_tokens, repeats):
  batch = 16
  cfg = SamplingConfig(max_prompt_len=16, max_len=16 + new_tokens + 8 * 48,
                       max_new_tokens=new_tokens, temperature=0.0,
                       max_searches=8, doc_block_len=48)
  fmt = DocumentFormat(query_begin="\n", query_end=".", top_k=2, doc_tokens=20,
                       block_len=48)
  texts = (PROMPTS * 2)[:batch]
  off = Sampler(model, tok, cfg, doc_format=fmt)
  on = Sampler(model, tok, cfg, retriever=DictRetriever(), doc_format=fmt)
  t_off = best_time(lambda: off(texts), repeats)
  t_on = best_time(lambda: on(texts), repeats)
  out = on(texts)
  t_seg = best_time(lambda: segmented_generate(on, texts).tokens.block_until_ready(),
                    repeats)
  seg = segmented_generate(on, texts)
  same = bool((np.asarray(seg.tokens) == out.tokens).all())
  doc_tokens = int(((out.loss_mask == 0) &
                    (np.arange(out.tokens.shape[1])[None] >= out.prompt_len) &
                    (np.arange(out.tokens.shape[1])[None] < out.lengths[:, None])).sum())
  # What those document tokens cost as their own prefill: one row's
  # 48-token chunk through the model into a cache of the loop's length.
  graphdef, params = nnx.split(model)
  chunk = jnp.asarray(np.asarray(tok.encode("the " * 48)[:48])[None], jnp.int32)

  @jax.jit
  def prefill_chunk(params, chunk):
    cache = models.init_cache(model.cfg, 1, cfg.max_len)
    logits, cache = nnx.merge(graphdef, params)(
        chunk, jnp.arange(48)[None] + 100, cache, logits_at=jnp.array([47]))
    return logits

  t_chunk = best_time(lambda: prefill_chunk(params, chunk).block_until_ready(),
                      repeats)
  doc_prefill = doc_tokens / 48 * t_chunk
  return dict(t_off=t_off, t_on=t_on, t_seg=t_seg, same=same,
              searches=int(out.num_searches.sum()), doc_tokens=doc_tokens,
              doc_prefill=doc_prefill)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--only", choices=["decode", "handoff"], default=None)
  args = ap.parse_args()
  import torch
  import transformers
  torch.set_num_threads(os.cpu_count())
  gguf = assets.fetch("smollm2-135m-instruct", quiet=True)
  model, _ = models.load_gguf(gguf)
  tok = tokenizer.BPETokenizer.from_gguf(gguf)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()

  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
  if args.only != "handoff":
    decode_table(model, tok, hf, args)
  if args.only != "decode":
    handoff_table(model, tok, args)


def matmul_floor(model, batch, repeats):
  """Milliseconds of one decode step's matrix products alone, in JAX and in
  PyTorch: every layer's q/k/v/o, gate/up/down projections and the LM head on
  `batch` rows, with the model's weights (no attention, norms or cache).

  No decode loop can take less than its framework's figure, whatever it does
  around the products; transformers' step time over ours bounds the ratio.
  """
  import torch
  d = model.cfg.hidden_size
  weights = [tuple(np.array(w[...]).reshape(sh) for w, sh in (
      (b.q, (d, -1)), (b.k, (d, -1)), (b.v, (d, -1)), (b.o, (-1, d)),
      (b.gate, (d, -1)), (b.up, (d, -1)), (b.down, (-1, d))))
      for b in model.layers]
  embed = np.array(model.embed[...])
  d_kv = weights[0][1].shape[1]

  def step(x, weights, embed, pad, silu):
    for q, k, v, o, gate, up, down in weights:
      x = x + (x @ q + pad(x @ k + x @ v, d_kv)) @ o
      x = x + (silu(x @ gate) * (x @ up)) @ down
    return x @ embed.T

  x = np.random.default_rng(0).normal(0, 0.01, (batch, d)).astype(np.float32)
  jax_pad = lambda y, n: jnp.pad(y, ((0, 0), (0, d - n)))
  jax_step = jax.jit(lambda x, w, e: step(x, w, e, jax_pad, jax.nn.silu))
  jw = jax.tree.map(jnp.asarray, weights)
  je, jx = jnp.asarray(embed), jnp.asarray(x)
  ours = best_time(lambda: jax_step(jx, jw, je).block_until_ready(), 5 * repeats)
  tw = [tuple(torch.from_numpy(w) for w in ws) for ws in weights]
  torch_pad = lambda y, n: torch.nn.functional.pad(y, (0, d - n))
  with torch.no_grad():
    theirs = best_time(lambda: step(torch.from_numpy(x), tw, torch.from_numpy(embed),
                                    torch_pad, torch.nn.functional.silu),
                       5 * repeats)
  return 1e3 * ours, 1e3 * theirs


def decode_table(model, tok, hf, args):
  rows = []
  print("| decode, greedy, %d new tokens | ours tok/s | transformers tok/s | ratio |"
        " same tokens |" % args.new_tokens)
  print("|---|---|---|---|---|")
  for batch in (1, 16):
    ours, theirs, agree = decode_benchmark(model, tok, hf, batch,
                                           args.new_tokens, args.repeats)
    print(f"| batch {batch} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x |"
          f" {agree:.0%} |")
    rows.append((batch, 1e3 * batch / ours, 1e3 * batch / theirs))
  print("\n| ms per decode step | ours (loop) | transformers | matmuls only, JAX |"
        " matmuls only, PyTorch | ratio bound |")
  print("|---|---|---|---|---|---|")
  for batch, ours_ms, theirs_ms in rows:
    jax_ms, torch_ms = matmul_floor(model, batch, args.repeats)
    print(f"| batch {batch} | {ours_ms:.1f} | {theirs_ms:.1f} | {jax_ms:.1f} |"
          f" {torch_ms:.1f} | {theirs_ms / jax_ms:.2f}x |")


def handoff_table(model, tok, args):
  r = handoff_benchmark(model, tok, args.new_tokens, args.repeats)
  print(f"\nhand-off, batch 16, {r['searches']} searches, {r['doc_tokens']} "
        f"document tokens; identical tokens in both modes: {r['same']}\n")
  print("| mode | seconds | beyond `off` | document tokens as a prefill |")
  print("|---|---|---|---|")
  print(f"| off (no retrieval) | {r['t_off']:.2f} | - | - |")
  for name, key in (("in-loop io_callback", "t_on"), ("segments (Python)", "t_seg")):
    extra = r[key] - r["t_off"]
    print(f"| {name} | {r[key]:.2f} | {extra:+.2f} s ({extra / r['t_off']:+.0%}) |"
          f" {r['doc_prefill']:.2f} s |")


if __name__ == "__main__":
  main()
