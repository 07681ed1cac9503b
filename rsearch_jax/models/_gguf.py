"""GGUF files (llama.cpp) as an HF config dict and HF-named float32 tensors.

Main entry point:
  read_gguf(path) -> (hf_config, tensors)   consumed by `_hf.load_gguf`.

Every tensor is dequantized to float32 with the `gguf` package. llama.cpp's
converter permutes the rows of the Q and K projections of the llama
architecture (it interleaves the two RoPE halves); the permutation is undone
here, so the tensors are exactly the HF checkpoint's layout.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import numpy as np

SUPPORTED_ARCHS = ("llama", "qwen2")

# llama.cpp tensor name -> HF name ({i}: block index).
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute` of Q/K rows (per head: interleaved
  pairs back to HF's "first half, second half" RoPE layout)."""
  rows = w.shape[0]
  half = rows // heads // 2
  return (w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2)
          .reshape(w.shape))


def _decimal(x) -> float:
  """A float32 metadata value as the shortest decimal that rounds to it
  (1e-5, not 9.99999974e-06): what the original config.json said."""
  return float(str(np.float32(x)))


def read_gguf(path: os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Reads a llama / qwen2 GGUF: (HF config.json dict, HF-named tensors).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a GGUF file, an unsupported architecture, or missing
      metadata (each message names the file).
  """
  import gguf  # slow to import; only needed here

  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  try:
    reader = gguf.GGUFReader(str(path), "r")
  except Exception as e:  # gguf raises ValueError / struct errors on junk
    raise ValueError(f"{path}: not a readable GGUF file ({e})") from None
  meta = {k: f.contents() for k, f in reader.fields.items()
          if not k.startswith("tokenizer.ggml.")}
  arch = meta.get("general.architecture")
  if arch not in SUPPORTED_ARCHS:
    raise ValueError(f"{path}: architecture {arch!r} is not supported "
                     f"(supported: {', '.join(SUPPORTED_ARCHS)})")

  def need(key):
    full = f"{arch}.{key}"
    if full not in meta:
      raise ValueError(f"{path}: GGUF metadata has no {full}")
    return meta[full]

  num_heads = int(need("attention.head_count"))
  num_kv = int(meta.get(f"{arch}.attention.head_count_kv", num_heads))
  names = {t.name for t in reader.tensors}
  if "rope_freqs.weight" in names:
    raise ValueError(f"{path}: per-frequency RoPE factors (rope_freqs, llama3 "
                     "scaling) are not supported from GGUF; convert from the HF "
                     "checkpoint instead")
  tensors: dict[str, np.ndarray] = {}
  for t in reader.tensors:
    value = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type),
                       dtype=np.float32)
    if t.name in _TOP_NAMES:
      tensors[_TOP_NAMES[t.name]] = value
      continue
    m = _BLOCK.match(t.name)
    if not m or m.group(2) not in _LAYER_NAMES:
      raise ValueError(f"{path}: unexpected tensor {t.name!r} for arch {arch!r}")
    i, part = int(m.group(1)), m.group(2)
    if arch == "llama" and part == "attn_q.weight":
      value = _unpermute(value, num_heads)
    elif arch == "llama" and part == "attn_k.weight":
      value = _unpermute(value, num_kv)
    tensors[f"model.layers.{i}.{_LAYER_NAMES[part]}"] = value

  embed = tensors.get("model.embed_tokens.weight")
  if embed is None:
    raise ValueError(f"{path}: no token_embd.weight tensor")
  hidden = int(need("embedding_length"))
  hf: dict[str, Any] = dict(
      model_type=arch,
      vocab_size=int(embed.shape[0]),
      hidden_size=hidden,
      intermediate_size=int(need("feed_forward_length")),
      num_hidden_layers=int(need("block_count")),
      num_attention_heads=num_heads,
      num_key_value_heads=num_kv,
      head_dim=int(meta.get(f"{arch}.attention.key_length", hidden // num_heads)),
      rope_theta=_decimal(meta.get(f"{arch}.rope.freq_base", 10000.0)),
      rms_norm_eps=_decimal(need("attention.layer_norm_rms_epsilon")),
      max_position_embeddings=int(meta.get(f"{arch}.context_length", 2048)),
      tie_word_embeddings="lm_head.weight" not in tensors,
  )
  if arch == "llama":  # qwen2 always has q/k/v biases; llama only sometimes
    hf["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in tensors
  scaling = meta.get(f"{arch}.rope.scaling.type")
  if scaling not in (None, "none"):
    if scaling != "linear":
      raise ValueError(f"{path}: rope scaling {scaling!r} is not supported")
    hf["rope_scaling"] = {"rope_type": "linear",
                          "factor": _decimal(need("rope.scaling.factor"))}
  return hf, tensors
