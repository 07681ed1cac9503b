"""GGUF import against transformers.

Tiny random llama / qwen2 GGUFs (written here with gguf.GGUFWriter, the way
llama.cpp's converter lays them out) against the HF models they were written
from; and SmolLM2-135M-Instruct's greedy continuations against transformers
reading the same file (slow: it loads the real 98 MB asset).

The GGUF tokenizer (round trips, agreement with transformers, tags) is
covered by tests/tokenizer_test.py.
"""

import dataclasses

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from rsearch_jax import models, tokenizer
from rsearch_jax.models import _hf
from rsearch_jax.models._gguf import read_gguf
from rsearch_jax.sampling import Sampler, SamplingConfig

jax.config.update("jax_default_matmul_precision", "highest")

# HF name (after "model.layers.{i}.") -> llama.cpp name (after "blk.{i}.").
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _permute(w, heads):
  """llama.cpp's convert_hf_to_gguf `permute` of Q/K rows, written here from
  its definition, independently of the importer's inverse: within each head,
  the rows of the two RoPE halves are interleaved."""
  return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _write_gguf(path, arch, hf_model, cfg, rope_theta, linear_rope=None):
  """Writes `hf_model` as llama.cpp would: llama.cpp names, Q/K rows permuted
  for the llama architecture only, no output.weight when tied."""
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(cfg.num_hidden_layers)
  w.add_context_length(cfg.max_position_embeddings)
  w.add_embedding_length(cfg.hidden_size)
  w.add_feed_forward_length(cfg.intermediate_size)
  w.add_head_count(cfg.num_attention_heads)
  w.add_head_count_kv(cfg.num_key_value_heads)
  w.add_rope_freq_base(rope_theta)
  w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
  if linear_rope:
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(linear_rope)
  sd = {k: v.numpy().astype(np.float32) for k, v in hf_model.state_dict().items()}
  w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
  w.add_tensor("output_norm.weight", sd["model.norm.weight"])
  if not cfg.tie_word_embeddings:
    w.add_tensor("output.weight", sd["lm_head.weight"])
  for i in range(cfg.num_hidden_layers):
    for hf_name, g_name in _LAYER_NAMES.items():
      t = sd.get(f"model.layers.{i}.{hf_name}")
      if t is None:
        continue  # biases: qwen2 only
      if arch == "llama" and g_name == "attn_q.weight":
        t = _permute(t, cfg.num_attention_heads)
      elif arch == "llama" and g_name == "attn_k.weight":
        t = _permute(t, cfg.num_key_value_heads)
      w.add_tensor(f"blk.{i}.{g_name}", t)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _tiny_llama():
  return transformers.LlamaConfig(
      vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
      rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=False)


def _tiny_qwen2():
  return transformers.Qwen2Config(
      vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
      num_attention_heads=6, num_key_value_heads=2,
      rope_parameters={"rope_type": "linear", "factor": 2.0,
                       "rope_theta": 1e6},
      rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=True)


def _random_hf(cfg):
  torch.manual_seed(0)
  cls = (transformers.LlamaForCausalLM if cfg.model_type == "llama"
         else transformers.Qwen2ForCausalLM)
  model = cls(cfg).float().eval()
  with torch.no_grad():  # HF zero-initialises biases: make them matter
    for name, p in model.named_parameters():
      if name.endswith("bias"):
        p.normal_(0.0, 0.5)
  return model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_gguf_equals_transformers(tmp_path, arch):
  cfg = _tiny_llama() if arch == "llama" else _tiny_qwen2()
  hf = _random_hf(cfg)
  path = tmp_path / f"tiny-{arch}.gguf"
  _write_gguf(path, arch, hf, cfg, rope_theta=1e4 if arch == "llama" else 1e6,
              linear_rope=2.0 if arch == "qwen2" else None)

  # The tensors come back under HF names, in HF layout, bit for bit: compared
  # with what transformers' own save_pretrained writes.
  hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
  saved = _hf.read_hf_tensors(tmp_path / "hf")
  hf_config, tensors = read_gguf(path)
  assert sorted(tensors) == sorted(saved)
  for name, value in saved.items():
    np.testing.assert_array_equal(tensors[name], value, err_msg=name)

  # The config agrees with the one transformers saved.
  ours, ours_cfg = models.load_gguf(path)
  _, ref_cfg = models.load_hf(tmp_path / "hf")
  assert dataclasses.replace(ours_cfg, rope_scaling=None) == dataclasses.replace(
      ref_cfg, rope_scaling=None)
  assert (ours_cfg.rope_scaling_dict or {}).get("factor") == (
      2.0 if arch == "qwen2" else None)
  assert ours_cfg.tie_embeddings == (arch == "qwen2")
  assert ours_cfg.qkv_bias == (arch == "qwen2")

  # Logits on a right-padded batch equal the HF model's on each row alone.
  rows = [[5, 17, 3, 90, 42, 8, 1], [7, 2, 64, 11]]
  length = max(map(len, rows))
  ids = np.zeros((len(rows), length), np.int32)
  positions = np.full((len(rows), length), -1, np.int32)
  for b, row in enumerate(rows):
    ids[b, :len(row)] = row
    positions[b, :len(row)] = np.arange(len(row))
  logits, _ = ours(jnp.asarray(ids), jnp.asarray(positions))
  for b, row in enumerate(rows):
    with torch.no_grad():
      ref = hf(torch.tensor([row])).logits[0].numpy()
    np.testing.assert_allclose(np.asarray(logits[b, :len(row)]), ref,
                               atol=1e-4, rtol=0)


def _empty_gguf(path, arch, **kv):
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(1)
  for key, value in kv.items():
    w.add_float32(key, value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def test_gguf_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
    models.load_gguf(tmp_path / "nowhere.gguf")
  junk = tmp_path / "junk.gguf"
  junk.write_bytes(b"not a gguf file at all")
  with pytest.raises(ValueError, match="junk.gguf"):
    models.load_gguf(junk)
  gpt2 = _empty_gguf(tmp_path / "gpt2.gguf", "gpt2")
  with pytest.raises(ValueError,
                     match=r"gpt2.gguf: architecture 'gpt2' is not supported"):
    models.load_gguf(gpt2)
  # A supported arch with its hyper-parameters missing names the key.
  bare = _empty_gguf(tmp_path / "bare.gguf", "llama")
  with pytest.raises(ValueError, match=r"bare.gguf: .*llama\.attention\.head_count"):
    models.load_gguf(bare)


# No digits: transformers' GGUF tokenizer lacks SmolLM2's digit split (see
# BPETokenizer.from_gguf), so ids would differ on digits for a known reason.
PROMPTS = ["The capital of France is",
           "Here is a short poem about the sea:\n",
           "Question: Who wrote Hamlet?\nAnswer:"]
NEW_TOKENS = 24


@pytest.mark.slow
def test_smollm2_greedy_continuations_match_transformers(smollm2_gguf):
  ours, cfg = models.load_gguf(smollm2_gguf)
  tok = tokenizer.BPETokenizer.from_gguf(smollm2_gguf)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
      dtype=torch.float32).eval()
  hf_tok = transformers.AutoTokenizer.from_pretrained(
      smollm2_gguf.parent, gguf_file=smollm2_gguf.name)

  # Same hyper-parameters, and the very same float32 weights as transformers'
  # own GGUF loader (dequantized Q4_1, Q/K permutation undone).
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads,
          cfg.vocab_size, cfg.tie_embeddings) == (30, 576, 9, 3, 49152, True)
  ref_cfg = models.ModelConfig.from_hf(hf.config.to_dict())
  # transformers keeps the float32 epsilon (9.99999975e-06), we its decimal.
  assert cfg.rms_norm_eps == pytest.approx(ref_cfg.rms_norm_eps, rel=1e-7)
  assert cfg == ref_cfg.replace(rms_norm_eps=cfg.rms_norm_eps)
  ref_sd = hf.state_dict()
  for name, value in models.to_hf_tensors(ours).items():
    np.testing.assert_array_equal(value, ref_sd[name].numpy(), err_msg=name)

  ids = [tok.encode(p) for p in PROMPTS]
  for p, row in zip(PROMPTS, ids):
    assert row == hf_tok.encode(p, add_special_tokens=False), p

  # Greedy continuations: our sampler (left-padded batch, KV cache, jitted
  # loop) against transformers' generate on each prompt alone.
  sampler = Sampler(ours, tok, SamplingConfig(
      max_prompt_len=16, max_len=16 + NEW_TOKENS, max_new_tokens=NEW_TOKENS,
      temperature=0.0), stop_tags=())
  out = sampler(ids)
  for i, row in enumerate(ids):
    with torch.no_grad():
      ref = hf.generate(torch.tensor([row]), max_new_tokens=NEW_TOKENS,
                        do_sample=False,
                        attention_mask=torch.ones(1, len(row), dtype=torch.long))
    ref_new = ref[0, len(row):].tolist()
    got = out.tokens[i, out.prompt_len:out.lengths[i]].tolist()
    # Both stop after EOS or NEW_TOKENS tokens.
    assert got == ref_new, (PROMPTS[i], tok.decode(got), tok.decode(ref_new))

  # The prompts' logits, as one right-padded batch. float32 in 30 layers with
  # different kernels (summation order): rounding differences of ~1e-6
  # relative grow to ~1e-4 absolute on logits of magnitude ~20; a real error
  # (a wrong permutation, norm or RoPE) shows up at order 1.
  length = max(map(len, ids))
  batch = np.zeros((len(ids), length), np.int32)
  positions = np.full((len(ids), length), -1, np.int32)
  for b, row in enumerate(ids):
    batch[b, :len(row)] = row
    positions[b, :len(row)] = np.arange(len(row))
  logits, _ = ours(jnp.asarray(batch), jnp.asarray(positions))  # eager: no compile
  for b, row in enumerate(ids):
    with torch.no_grad():
      ref_logits = hf(torch.tensor([row])).logits[0].numpy()
    diff = np.abs(np.asarray(logits[b, :len(row)]) - ref_logits).max()
    assert diff < 1e-3, (PROMPTS[b], diff)
