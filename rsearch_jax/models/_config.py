"""The decoder's hyper-parameters, and their translation from HF config.json."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a Llama / Qwen2 family decoder.

  Attributes:
    vocab_size: rows of the token embedding (and columns of the LM head).
    hidden_size: model width D.
    intermediate_size: SwiGLU hidden width F.
    num_layers: number of decoder blocks.
    num_heads: query heads H.
    num_kv_heads: key/value heads K (grouped-query attention, H % K == 0).
    head_dim: per-head width (HF default: hidden_size // num_heads).
    rope_theta: RoPE base frequency.
    rope_scaling: None, or HF's rope_scaling dict ("linear" or "llama3").
    rms_norm_eps: RMSNorm epsilon.
    qkv_bias: biases on the q/k/v projections (Qwen2).
    tie_embeddings: the LM head reuses the embedding matrix.
    max_position_embeddings: informational; caches are sized by the caller.
    param_dtype: storage dtype of the parameters ("float32", "bfloat16").
    dtype: compute dtype of matmuls; softmax and norms stay in float32.
    remat: recompute each block's activations in the backward pass.
    family: "llama" or "qwen2" (for export back to HF).
    smear_keys: mix each key with the previous token's key by a learned
      per-KV-head weight (Olsson et al. 2022, "In-context learning and
      induction heads"). It lets a single layer find "the token after an
      earlier copy of this one", which a small model trained from scratch
      otherwise takes far longer to learn (benchmarks/copying.py). Not part of
      Llama / Qwen2: a model with it cannot be exported to HF.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] | None = None
  rms_norm_eps: float = 1e-6
  qkv_bias: bool = False
  tie_embeddings: bool = False
  max_position_embeddings: int = 2048
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat: bool = False
  family: str = "llama"
  smear_keys: bool = False

  def __post_init__(self):
    if self.head_dim is None:
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if isinstance(self.rope_scaling, dict):
      object.__setattr__(
          self, "rope_scaling", tuple(sorted(self.rope_scaling.items()))
      )
    problems = []
    if self.num_heads % self.num_kv_heads:
      problems.append(
          f"num_heads={self.num_heads} is not a multiple of "
          f"num_kv_heads={self.num_kv_heads}"
      )
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in _DTYPES:
        problems.append(
            f"{name}={getattr(self, name)!r} is not one of {sorted(_DTYPES)}"
        )
    if self.family not in ("llama", "qwen2"):
      problems.append(f"family={self.family!r} is not 'llama' or 'qwen2'")
    if problems:
      raise ValueError("ModelConfig: " + "; ".join(problems))

  @property
  def jnp_param_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def rope_scaling_dict(self) -> dict[str, Any] | None:
    return dict(self.rope_scaling) if self.rope_scaling else None

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def num_params(self) -> int:
    d, f, h, k, hd = (self.hidden_size, self.intermediate_size, self.num_heads,
                      self.num_kv_heads, self.head_dim)
    attn = d * hd * (h + 2 * k) + h * hd * d
    if self.qkv_bias:
      attn += hd * (h + 2 * k)
    block = attn + 3 * d * f + 2 * d + (k if self.smear_keys else 0)
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * block + emb + d

  # --- HF config.json ------------------------------------------------------

  @classmethod
  def from_hf(cls, hf: dict[str, Any], **overrides) -> "ModelConfig":
    """Builds a config from a Llama or Qwen2 HF `config.json` dict."""
    model_type = hf.get("model_type")
    if model_type not in ("llama", "qwen2"):
      raise ValueError(
          f"config.json: model_type={model_type!r} is not supported "
          "(supported: 'llama', 'qwen2')"
      )
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                           "num_hidden_layers", "num_attention_heads")
               if k not in hf]
    if missing:
      raise ValueError(f"config.json: missing fields {missing}")
    num_heads = hf["num_attention_heads"]
    qwen = model_type == "qwen2"
    kw = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
        rope_theta=_hf_rope_theta(hf),
        rope_scaling=_hf_rope_scaling(hf),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=True if qwen else bool(hf.get("attention_bias", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        family=model_type,
    )
    kw.update(overrides)
    return cls(**kw)

  def to_hf(self) -> dict[str, Any]:
    """The HF `config.json` dict that `from_hf` reads back to this config."""
    if self.smear_keys:
      raise ValueError(
          "ModelConfig.smear_keys=True has no Llama / Qwen2 equivalent: this "
          "model cannot be exported to HF (save an Orbax checkpoint instead)")
    arch = "LlamaForCausalLM" if self.family == "llama" else "Qwen2ForCausalLM"
    hf = dict(
        architectures=[arch],
        model_type=self.family,
        vocab_size=self.vocab_size,
        hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size,
        num_hidden_layers=self.num_layers,
        num_attention_heads=self.num_heads,
        num_key_value_heads=self.num_kv_heads,
        head_dim=self.head_dim,
        rope_theta=self.rope_theta,
        rope_scaling=self.rope_scaling_dict,
        rms_norm_eps=self.rms_norm_eps,
        tie_word_embeddings=self.tie_embeddings,
        max_position_embeddings=self.max_position_embeddings,
        hidden_act="silu",
        torch_dtype=self.param_dtype,
    )
    if self.family == "llama":
      hf["attention_bias"] = self.qkv_bias
      hf["mlp_bias"] = False
    return hf


def _hf_rope_theta(hf: dict[str, Any]) -> float:
  if "rope_theta" in hf:
    return float(hf["rope_theta"])
  params = hf.get("rope_parameters") or {}  # transformers 5 layout
  return float(params.get("rope_theta", 10000.0))


def _hf_rope_scaling(hf: dict[str, Any]):
  scaling = hf.get("rope_scaling")
  if not scaling:
    # transformers 5 moves theta/scaling into `rope_parameters`.
    params = hf.get("rope_parameters")
    if params and params.get("rope_type", "default") != "default":
      scaling = params
  if not scaling:
    return None
  kind = scaling.get("rope_type", scaling.get("type"))
  if kind in (None, "default"):
    return None
  if kind not in ("linear", "llama3"):
    raise ValueError(
        f"config.json: rope_scaling type {kind!r} is not supported "
        "(supported: 'linear', 'llama3')"
    )
  scaling = {k: v for k, v in scaling.items() if k != "type"}
  scaling["rope_type"] = kind
  scaling.pop("rope_theta", None)
  return tuple(sorted(scaling.items()))
