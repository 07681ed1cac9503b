"""Real weights in and out: HF safetensors directories and GGUF files.

Main entry points:
  load_hf(path)              a local HF directory (config.json + *.safetensors)
                             -> (Decoder, ModelConfig).
  save_hf(model, path)       the same format back (round trip is exact).
  load_gguf(path)            a GGUF file (dequantized to float32) -> (Decoder, cfg).
  load_pretrained(path)      dispatches on directory / .gguf.

Loading never downloads. With a `mesh`, each parameter is created directly in
its shards (`jax.make_array_from_callback` reads only the slice a device owns
from the memory-mapped file), so a model too large for one device loads.

Name and layout mapping (HF torch Linear weights are [out, in]):
  model.embed_tokens.weight [V, D]            -> embed [V, D]
  model.layers.{i}.self_attn.q_proj.weight    -> layers[i].q [D, H, Dh]
  model.layers.{i}.self_attn.o_proj.weight    -> layers[i].o [H, Dh, D]
  model.layers.{i}.mlp.gate_proj.weight       -> layers[i].gate [D, F]
  model.layers.{i}.mlp.down_proj.weight       -> layers[i].down [F, D]
  lm_head.weight [V, D]                       -> lm_head [D, V]
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
from typing import Callable, Iterable

import jax
import ml_dtypes
import numpy as np
from flax import nnx

from rsearch_jax import sharding as sharding_lib
from rsearch_jax.models._config import ModelConfig
from rsearch_jax.models._decoder import Decoder

# --- safetensors (read lazily via memmap, bf16 included) ----------------------

_ST_DTYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F64": np.float64, "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def read_safetensors(path: os.PathLike) -> dict[str, np.ndarray]:
  """Tensors of one .safetensors file as read-only memory-mapped arrays."""
  path = pathlib.Path(path)
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    try:
      header = json.loads(f.read(n))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _ST_DTYPES:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    dtype = np.dtype(_ST_DTYPES[info["dtype"]])
    out[name] = data[start:end].view(dtype).reshape(info["shape"])
  return out


def write_safetensors(path: os.PathLike, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
  header, offset, arrays = {}, 0, []
  if metadata:
    header["__metadata__"] = metadata
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    header[name] = {"dtype": _ST_NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    arrays.append(a)
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)  # 8-byte alignment of the data section
  tmp = pathlib.Path(str(path) + ".partial")
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for a in arrays:
      f.write(a.tobytes())
  tmp.rename(path)


# --- name mapping -------------------------------------------------------------

# (our name, HF name pattern, HF -> ours for one layer, ours -> HF)
def _layer_map(cfg: ModelConfig):
  D, H, K, Dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  pre = "model.layers.{i}."
  m = [
      ("attn_norm", pre + "input_layernorm.weight", lambda w: w, lambda w: w),
      ("q", pre + "self_attn.q_proj.weight",
       lambda w: w.T.reshape(D, H, Dh), lambda w: w.reshape(D, H * Dh).T),
      ("k", pre + "self_attn.k_proj.weight",
       lambda w: w.T.reshape(D, K, Dh), lambda w: w.reshape(D, K * Dh).T),
      ("v", pre + "self_attn.v_proj.weight",
       lambda w: w.T.reshape(D, K, Dh), lambda w: w.reshape(D, K * Dh).T),
      ("o", pre + "self_attn.o_proj.weight",
       lambda w: w.T.reshape(H, Dh, D), lambda w: w.reshape(H * Dh, D).T),
      ("mlp_norm", pre + "post_attention_layernorm.weight",
       lambda w: w, lambda w: w),
      ("gate", pre + "mlp.gate_proj.weight", lambda w: w.T, lambda w: w.T),
      ("up", pre + "mlp.up_proj.weight", lambda w: w.T, lambda w: w.T),
      ("down", pre + "mlp.down_proj.weight", lambda w: w.T, lambda w: w.T),
  ]
  if cfg.qkv_bias:
    m += [
        ("q_bias", pre + "self_attn.q_proj.bias",
         lambda w: w.reshape(H, Dh), lambda w: w.reshape(H * Dh)),
        ("k_bias", pre + "self_attn.k_proj.bias",
         lambda w: w.reshape(K, Dh), lambda w: w.reshape(K * Dh)),
        ("v_bias", pre + "self_attn.v_proj.bias",
         lambda w: w.reshape(K, Dh), lambda w: w.reshape(K * Dh)),
    ]
  return m


def _top_map(cfg: ModelConfig):
  m = [("embed", "model.embed_tokens.weight", lambda w: w, lambda w: w),
       ("final_norm", "model.norm.weight", lambda w: w, lambda w: w)]
  if not cfg.tie_embeddings:
    m.append(("lm_head", "lm_head.weight", lambda w: w.T, lambda w: w.T))
  return m


def _our_value_fns(cfg: ModelConfig, tensors: dict[str, np.ndarray],
                   source: str) -> dict[tuple[str, ...], tuple[str, Callable[[], np.ndarray]]]:
  """Lazy builders of every parameter of ours, keyed by state path."""
  used: set[str] = set()

  def get(name):
    if name not in tensors:
      raise ValueError(f"{source}: checkpoint has no tensor {name!r}")
    used.add(name)
    return tensors[name]

  fns = {}
  for ours, hf, to_ours, _ in _top_map(cfg):
    fns[(ours,)] = (hf, lambda hf=hf, f=to_ours: f(get(hf)))
  for ours, pattern, to_ours, _ in _layer_map(cfg):
    for i in range(cfg.num_layers):
      hf = pattern.format(i=i)
      fns[("layers", i, ours)] = (hf, lambda hf=hf, f=to_ours: f(get(hf)))
  # Tied checkpoints sometimes still carry lm_head.weight; it must equal embed.
  ignorable = {"lm_head.weight"} if cfg.tie_embeddings else set()
  expected = {hf for _, hf, _, _ in _top_map(cfg)} | {
      p.format(i=i) for _, p, _, _ in _layer_map(cfg) for i in range(cfg.num_layers)}
  unknown = sorted(set(tensors) - expected - ignorable
                   - {k for k in tensors if k.endswith("rotary_emb.inv_freq")})
  if unknown:
    raise ValueError(
        f"{source}: tensors this {cfg.family} config does not use: "
        f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''} (does config.json "
        "match the checkpoint?)")
  return fns


def _build(cfg: ModelConfig, tensors: dict[str, np.ndarray], source: str,
           mesh=None, rules=sharding_lib.DEFAULT_RULES, seed: int = 0) -> Decoder:
  abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(seed)))
  graphdef, state = nnx.split(abstract)
  fns = _our_value_fns(cfg, tensors, source)
  flat = dict(nnx.to_flat_state(state))
  missing = set(flat) - set(fns)
  if missing:
    raise ValueError(f"{source}: no checkpoint mapping for {sorted(missing)}")
  shardings = (sharding_lib.state_shardings(state, mesh, rules)
               if mesh is not None else None)
  flat_shardings = dict(nnx.to_flat_state(shardings)) if shardings else {}
  for key, var in flat.items():
    want = var.get_value()
    hf_name, fn = fns[key]
    value = fn()
    if tuple(value.shape) != tuple(want.shape):
      raise ValueError(
          f"{source}: parameter {'.'.join(map(str, key))} ({hf_name}) has shape "
          f"{tuple(value.shape)} in the checkpoint but the config expects "
          f"{tuple(want.shape)}")
    value = np.asarray(value).astype(want.dtype, copy=False)
    if mesh is None:
      arr = jax.numpy.asarray(value)
    else:
      s = flat_shardings[key]
      s = s.get_value() if isinstance(s, nnx.Variable) else s
      arr = jax.make_array_from_callback(value.shape, s, lambda idx, v=value: v[idx])
    var.set_value(arr)
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _read_config(path: pathlib.Path) -> dict:
  cfg_path = path / "config.json"
  if not cfg_path.exists():
    raise FileNotFoundError(f"{path}: no config.json (is this an HF model directory?)")
  try:
    return json.loads(cfg_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{cfg_path}: line {e.lineno}: {e.msg}") from None


def read_hf_tensors(path: os.PathLike) -> dict[str, np.ndarray]:
  path = pathlib.Path(path)
  files = sorted(path.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"{path}: no *.safetensors files")
  tensors = {}
  for f in files:
    tensors.update(read_safetensors(f))
  return tensors


def load_hf(path: os.PathLike, *, mesh=None, rules=sharding_lib.DEFAULT_RULES,
            **overrides) -> tuple[Decoder, ModelConfig]:
  """Loads a local HF Llama / Qwen2 directory.

  Args:
    path: directory with config.json and *.safetensors.
    mesh: optional mesh; parameters are then created sharded.
    rules: logical-axis rules for the mesh.
    **overrides: ModelConfig fields to override (param_dtype, dtype, remat).
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"model directory {path} does not exist")
  cfg = ModelConfig.from_hf(_read_config(path), **overrides)
  model = _build(cfg, read_hf_tensors(path), str(path), mesh, rules)
  return model, cfg


def load_gguf(path: os.PathLike, *, mesh=None, rules=sharding_lib.DEFAULT_RULES,
              **overrides) -> tuple[Decoder, ModelConfig]:
  """Loads a GGUF file, dequantizing every tensor to float32."""
  from rsearch_jax.models._gguf import read_gguf  # gguf is slow to import
  hf_config, tensors = read_gguf(path)
  cfg = ModelConfig.from_hf(hf_config, **overrides)
  return _build(cfg, tensors, str(path), mesh, rules), cfg


def load_pretrained(path: os.PathLike, **kw) -> tuple[Decoder, ModelConfig]:
  """A local HF directory or a .gguf file (asset names: see rsearch_jax.assets)."""
  path = pathlib.Path(path)
  if path.suffix == ".gguf":
    return load_gguf(path, **kw)
  return load_hf(path, **kw)


def to_hf_tensors(model: Decoder) -> dict[str, np.ndarray]:
  """The model's parameters under HF names, as host numpy arrays."""
  cfg = model.cfg
  cfg.to_hf()  # raises for a model HF cannot represent (smeared keys)

  def host(x):
    if jax.process_count() > 1 and not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))

  out = {}
  for ours, hf, _, to_hf in _top_map(cfg):
    out[hf] = np.ascontiguousarray(to_hf(host(getattr(model, ours)[...])))
  for ours, pattern, _, to_hf in _layer_map(cfg):
    for i, block in enumerate(model.layers):
      out[pattern.format(i=i)] = np.ascontiguousarray(
          to_hf(host(getattr(block, ours)[...])))
  return out


def save_hf(model: Decoder, path: os.PathLike) -> pathlib.Path:
  """Writes config.json + model.safetensors that `load_hf` (and transformers)
  read back; only process 0 writes on multi-host runs."""
  path = pathlib.Path(path)
  tensors = to_hf_tensors(model)
  if jax.process_index() == 0:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.cfg.to_hf(), indent=2))
    write_safetensors(path / "model.safetensors", tensors, {"format": "pt"})
  return path


def hf_tensor_names(cfg: ModelConfig) -> Iterable[str]:
  yield from (hf for _, hf, _, _ in _top_map(cfg))
  for _, pattern, _, _ in _layer_map(cfg):
    for i in range(cfg.num_layers):
      yield pattern.format(i=i)
