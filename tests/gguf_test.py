"""GGUF import: a tiny random llama GGUF against transformers, and
SmolLM2-135M-Instruct's greedy continuations against transformers reading
the same file."""

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from rsearch_jax import models, tokenizer
from rsearch_jax.models._gguf import read_gguf
from rsearch_jax.sampling import Sampler, SamplingConfig

jax.config.update("jax_default_matmul_precision", "highest")


def _permute(w, heads):
  """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (written here
  from its definition, independently of the importer's inverse)."""
  return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _write_tiny_llama_gguf(path, hf_model, cfg):
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(cfg.num_hidden_layers)
  w.add_context_length(cfg.max_position_embeddings)
  w.add_embedding_length(cfg.hidden_size)
  w.add_feed_forward_length(cfg.intermediate_size)
  w.add_head_count(cfg.num_attention_heads)
  w.add_head_count_kv(cfg.num_key_value_heads)
  w.add_rope_freq_base(10000.0)
  w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
  sd = {k: v.numpy().astype(np.float32) for k, v in hf_model.state_dict().items()}
  w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
  w.add_tensor("output_norm.weight", sd["model.norm.weight"])
  w.add_tensor("output.weight", sd["lm_head.weight"])
  names = {"input_layernorm.weight": "attn_norm.weight",
           "self_attn.q_proj.weight": "attn_q.weight",
           "self_attn.k_proj.weight": "attn_k.weight",
           "self_attn.v_proj.weight": "attn_v.weight",
           "self_attn.o_proj.weight": "attn_output.weight",
           "post_attention_layernorm.weight": "ffn_norm.weight",
           "mlp.gate_proj.weight": "ffn_gate.weight",
           "mlp.up_proj.weight": "ffn_up.weight",
           "mlp.down_proj.weight": "ffn_down.weight"}
  for i in range(cfg.num_hidden_layers):
    for hf_name, g_name in names.items():
      t = sd[f"model.layers.{i}.{hf_name}"]
      if g_name == "attn_q.weight":
        t = _permute(t, cfg.num_attention_heads)
      elif g_name == "attn_k.weight":
        t = _permute(t, cfg.num_key_value_heads)
      w.add_tensor(f"blk.{i}.{g_name}", t)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def test_tiny_gguf_matches_transformers(tmp_path):
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
      rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=False)
  hf = transformers.LlamaForCausalLM(cfg).float().eval()
  path = tmp_path / "tiny.gguf"
  _write_tiny_llama_gguf(path, hf, cfg)
  ours, our_cfg = models.load_gguf(path)
  assert (our_cfg.num_heads, our_cfg.num_kv_heads, our_cfg.tie_embeddings) == (4, 2, False)
  ids = np.array([[5, 17, 3, 99, 42, 8, 1]])
  with torch.no_grad():
    ref = hf(torch.tensor(ids)).logits.numpy()
  logits, _ = ours(jnp.asarray(ids, jnp.int32), jnp.arange(7)[None])
  np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)
  # The tensors themselves come back in HF layout, exactly.
  _, tensors = read_gguf(path)
  np.testing.assert_array_equal(tensors["model.layers.1.self_attn.k_proj.weight"],
                                hf.state_dict()["model.layers.1.self_attn.k_proj.weight"].numpy())


def test_gguf_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
    models.load_gguf(tmp_path / "nowhere.gguf")
  junk = tmp_path / "junk.gguf"
  junk.write_bytes(b"not a gguf file at all")
  with pytest.raises(ValueError, match="junk.gguf"):
    models.load_gguf(junk)
  w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
  w.add_block_count(1)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match=r"gpt2.gguf: architecture 'gpt2' is not supported"):
    models.load_gguf(tmp_path / "gpt2.gguf")


PROMPTS = ["The capital of France is",
           "Here is a short poem about the sea:\n",
           "Question: Who wrote Hamlet?\nAnswer:"]


@pytest.mark.slow
def test_smollm2_greedy_continuations_match_transformers(smollm2_gguf):
  ours, cfg = models.load_gguf(smollm2_gguf)
  tok = tokenizer.BPETokenizer.from_gguf(smollm2_gguf)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32).eval()
  hf_tok = transformers.AutoTokenizer.from_pretrained(
      smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
  new = 24
  sampler = Sampler(ours, tok, SamplingConfig(
      max_prompt_len=16, max_len=16 + new, max_new_tokens=new, temperature=0.0),
      stop_tags=())
  out = sampler(PROMPTS)
  for i, prompt in enumerate(PROMPTS):
    ids = tok.encode(prompt)
    assert ids == hf_tok.encode(prompt, add_special_tokens=False), prompt
    with torch.no_grad():
      ref = hf.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False,
                        attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    ref_new = ref[0, len(ids):].tolist()
    got = out.tokens[i, out.prompt_len:out.lengths[i]].tolist()
    # transformers stops at EOS too; compare what both produced.
    n = min(len(got), len(ref_new))
    assert n >= 8, (prompt, got, ref_new)
    assert got[:n] == ref_new[:n], (prompt, tok.decode(got), tok.decode(ref_new))
    # The prompt's logits agree closely (30 float32 layers, different kernels).
    with torch.no_grad():
      ref_logits = hf(torch.tensor([ids])).logits.numpy()
    logits, _ = ours(jnp.asarray([ids]), jnp.arange(len(ids))[None])
    assert np.abs(np.asarray(logits) - ref_logits).max() < 2e-3
