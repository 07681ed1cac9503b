"""The decoder against HF transformers (PyTorch CPU) on the same random weights,
the KV cache against the full pass, and the HF import / export round trip."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from rsearch_jax import models
from rsearch_jax.testing import randomize_smear

jax.config.update("jax_default_matmul_precision", "highest")

TINY = dict(vocab_size=211, hidden_size=64, intermediate_size=112,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, rms_norm_eps=1e-5)

CASES = {
    "llama": dict(cls=transformers.LlamaConfig, kw=dict(
        TINY, rope_theta=5000.0, tie_word_embeddings=False)),
    "llama3_rope_tied": dict(cls=transformers.LlamaConfig, kw=dict(
        TINY, tie_word_embeddings=True, rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=32),
        rope_theta=500000.0)),
    "qwen2": dict(cls=transformers.Qwen2Config, kw=dict(
        TINY, rope_theta=1000000.0, tie_word_embeddings=False)),
    "qwen2_tied": dict(cls=transformers.Qwen2Config, kw=dict(
        TINY, tie_word_embeddings=True)),
}


def _hf_model(case, tmp_path):
  torch.manual_seed(0)
  spec = CASES[case]
  hf_cfg = spec["cls"](**spec["kw"])
  model = transformers.AutoModelForCausalLM.from_config(hf_cfg).float().eval()
  with torch.no_grad():  # HF zero-inits biases; make them matter
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(tmp_path / case)
  return model, tmp_path / case


def _padded_batch(rng, vocab, lengths, total, left):
  tokens = np.zeros((len(lengths), total), np.int64)
  mask = np.zeros((len(lengths), total), np.int64)
  for b, n in enumerate(lengths):
    ids = rng.integers(1, vocab, n)
    if left:
      tokens[b, total - n:], mask[b, total - n:] = ids, 1
    else:
      tokens[b, :n], mask[b, :n] = ids, 1
  return tokens, mask


def _max_logit_error(hf, ours, lengths, left, seed):
  """Max |ours - transformers| logit over the real tokens of a random padded
  batch with rows of `lengths` tokens."""
  tokens, mask = _padded_batch(np.random.default_rng(seed), ours.cfg.vocab_size,
                               lengths, max(lengths), left)
  positions = np.asarray(models.positions_from_mask(jnp.asarray(mask)))
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
             position_ids=torch.tensor(np.maximum(positions, 0))).logits.numpy()
  logits, _ = ours(jnp.asarray(tokens, jnp.int32), jnp.asarray(positions))
  valid = mask.astype(bool)
  return np.abs(np.asarray(logits)[valid] - ref[valid]).max()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("left", [True, False], ids=["left_pad", "right_pad"])
def test_logits_match_transformers(case, left, tmp_path):
  hf, path = _hf_model(case, tmp_path)
  ours, cfg = models.load_hf(path)
  assert cfg.family == ("qwen2" if case.startswith("qwen2") else "llama")
  err = _max_logit_error(hf, ours, [17, 9, 1, 13], left, seed=1)
  assert err < 1e-4, err


@pytest.mark.parametrize("smear", [False, True], ids=["plain", "smeared_keys"])
def test_kv_cache_decode_equals_full_forward(smear):
  cfg = models.ModelConfig(vocab_size=97, hidden_size=64, intermediate_size=96,
                           num_layers=2, num_heads=4, num_kv_heads=2,
                           qkv_bias=True, smear_keys=smear)
  model = models.Decoder(cfg, rngs=nnx.Rngs(3))
  if smear:
    randomize_smear(model)
  rng = np.random.default_rng(0)
  # Left-padded prompts of different lengths, then 6 decoded tokens each.
  prompt, mask = _padded_batch(rng, 97, [5, 2, 7], 7, left=True)
  steps = rng.integers(1, 97, (3, 6))
  positions = models.positions_from_mask(jnp.asarray(mask))
  cache = models.init_cache(cfg, 3, 16)
  logits, cache = model(jnp.asarray(prompt, jnp.int32), positions, cache)
  all_tokens, all_pos = jnp.asarray(prompt, jnp.int32), positions
  step_fn = nnx.jit(lambda m, t, p, c: m(t, p, c))
  for s in range(steps.shape[1]):
    tok = jnp.asarray(steps[:, s:s + 1], jnp.int32)
    pos = all_pos.max(axis=1, keepdims=True) + 1
    step_logits, cache = step_fn(model, tok, pos, cache)
    all_tokens = jnp.concatenate([all_tokens, tok], 1)
    all_pos = jnp.concatenate([all_pos, pos], 1)
    full, _ = model(all_tokens, all_pos)
    np.testing.assert_allclose(step_logits[:, 0], full[:, -1], atol=1e-5, rtol=0)
  assert cache.end.tolist() == [13, 13, 13]


def _smear_reference(k, positions, weight):
  """Loop over tokens: each real token's key mixed with the previous real
  token's key of its row (padding skipped)."""
  out = k.copy()
  mix = 1 / (1 + np.exp(-weight))  # [K]
  for b in range(k.shape[0]):
    prev = None
    for t in range(k.shape[1]):
      if prev is not None:
        out[b, t] = k[b, t] + mix[:, None] * (prev - k[b, t])
      if positions[b, t] >= 0:
        prev = k[b, t]
  return out


def test_smeared_keys_equal_a_per_token_loop_with_padding_and_chunks():
  rng = np.random.default_rng(0)
  b, t, kh, dh = 3, 11, 2, 4
  k = rng.normal(size=(b, t, kh, dh)).astype(np.float32)
  weight = rng.normal(size=(kh,)).astype(np.float32)
  real = np.ones((b, t), bool)
  real[0, :3] = False            # left padding
  real[1, [4, 5, 9]] = False     # gaps inside, as at a finished row's steps
  real[2, 6:] = False            # right padding
  positions = np.where(real, np.cumsum(real, 1) - 1, -1)
  want = _smear_reference(k, positions, weight)
  got, last = models.smear_keys(jnp.asarray(k), jnp.asarray(positions),
                                jnp.asarray(weight))
  # Padding keys are never attended to; compare real tokens only.
  np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=1e-6)
  last_real = [max(np.nonzero(r)[0]) for r in real]
  np.testing.assert_allclose(np.asarray(last), k[np.arange(b), last_real])
  # The same sequence in two chunks through a cache's (last key, has one).
  for split in (1, 5, 8):
    first, first_last = models.smear_keys(
        jnp.asarray(k[:, :split]), jnp.asarray(positions[:, :split]),
        jnp.asarray(weight))
    has = jnp.asarray(real[:, :split].any(1))
    second, second_last = models.smear_keys(
        jnp.asarray(k[:, split:]), jnp.asarray(positions[:, split:]),
        jnp.asarray(weight), (first_last, has))
    both = np.concatenate([np.asarray(first), np.asarray(second)], 1)
    np.testing.assert_allclose(both[real], want[real], atol=1e-6)
    np.testing.assert_allclose(np.asarray(second_last), np.asarray(last))


def test_smeared_keys_cannot_be_exported_to_hf(tmp_path):
  cfg = models.ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                           num_layers=1, num_heads=2, num_kv_heads=2,
                           smear_keys=True)
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  assert cfg.num_params() == sum(
      x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  with pytest.raises(ValueError, match="smear_keys"):
    models.save_hf(model, tmp_path / "export")
  assert not (tmp_path / "export").exists()


def test_cache_rows_written_at_own_cursor():
  """A row can receive a chunk while another row's cursor stays put: the
  splice the sampler performs."""
  cfg = models.ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                           num_layers=1, num_heads=2, num_kv_heads=2)
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  cache = models.init_cache(cfg, 2, 12)
  cache = dataclasses.replace(cache, end=jnp.array([0, 4]))
  _, cache = model(jnp.ones((2, 3), jnp.int32), jnp.array([[0, 1, 2], [0, 1, 2]]),
                   cache)
  assert cache.pos[0, :3].tolist() == [0, 1, 2]
  assert cache.pos[1, :4].tolist() == [-1] * 4
  assert cache.pos[1, 4:7].tolist() == [0, 1, 2]


@pytest.mark.parametrize("case", ["llama", "qwen2_tied"])
def test_export_round_trip_is_exact(case, tmp_path):
  hf, path = _hf_model(case, tmp_path)
  ours, cfg = models.load_hf(path)
  out = models.save_hf(ours, tmp_path / "export")
  original = {k: v.numpy() for k, v in hf.state_dict().items()}
  exported = models._hf.read_hf_tensors(out)
  if cfg.tie_embeddings:
    original.pop("lm_head.weight")
  assert sorted(exported) == sorted(original)
  for name, value in original.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  # transformers reads our export and computes the same logits.
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
  ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
  with torch.no_grad():
    np.testing.assert_allclose(reloaded(ids).logits.numpy(),
                               hf(ids).logits.numpy(), atol=1e-6)


def test_shape_mismatch_names_parameter_and_shapes(tmp_path):
  _, path = _hf_model("llama", tmp_path)
  hf_cfg = json.loads((path / "config.json").read_text())
  hf_cfg["intermediate_size"] = 120
  (path / "config.json").write_text(json.dumps(hf_cfg))
  with pytest.raises(ValueError) as e:
    models.load_hf(path)
  msg = str(e.value)
  assert "layers.0.down (model.layers.0.mlp.down_proj.weight)" in msg, msg
  assert "(112, 64) in the checkpoint" in msg and "expects (120, 64)" in msg


def test_missing_and_bad_directories(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    models.load_hf(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="config.json"):
    models.load_hf(tmp_path / "empty")
  (tmp_path / "empty" / "config.json").write_text('{"model_type": "llama",\n oops}')
  with pytest.raises(ValueError, match="line 2"):
    models.load_hf(tmp_path / "empty")
  (tmp_path / "empty" / "config.json").write_text('{"model_type": "gpt2"}')
  with pytest.raises(ValueError, match="gpt2"):
    models.load_hf(tmp_path / "empty")


def test_resize_vocab_adds_mean_rows():
  cfg = models.ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                           num_layers=1, num_heads=2, num_kv_heads=2)
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  old_embed = np.asarray(model.embed[...])
  old_head = np.asarray(model.lm_head[...])
  models.resize_vocab(model, 44)
  assert model.cfg.vocab_size == 44
  np.testing.assert_array_equal(model.embed[...][:40], old_embed)
  np.testing.assert_allclose(model.embed[...][42], old_embed.mean(0), atol=1e-6)
  np.testing.assert_allclose(model.lm_head[...][:, 43], old_head.mean(1), atol=1e-6)
  logits, _ = model(jnp.array([[41, 2]]), jnp.array([[0, 1]]))
  assert logits.shape == (1, 2, 44)


def test_remat_and_bf16_compute_run():
  cfg = models.ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=32,
                           num_layers=2, num_heads=2, num_kv_heads=1,
                           remat=True, dtype="bfloat16")
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  ref = models.Decoder(cfg.replace(remat=False, dtype="float32"), rngs=nnx.Rngs(0))
  tokens, pos = jnp.array([[1, 2, 3]]), jnp.array([[0, 1, 2]])
  loss = lambda m: m(tokens, pos)[0].mean()
  g = nnx.grad(loss)(model)
  g_ref = nnx.grad(loss)(ref)
  np.testing.assert_allclose(g.layers[1].up[...], g_ref.layers[1].up[...],
                             atol=2e-3, rtol=0.1)


def test_training_learns_in_context_copying_without_seeing_the_future():
  """Trained on `noise, x, SEP, x` (x 12 random tokens), the decoder learns to
  copy x (an induction circuit: attention over earlier positions works in the
  training path), while the random tokens stay at chance (the causal mask
  hides the future from the training forward pass too)."""
  import optax
  cfg = models.ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                           num_layers=2, num_heads=4, num_kv_heads=2,
                           tie_embeddings=True, max_position_embeddings=64)
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
  n, noise = 12, 16

  def batch(rng):
    x = rng.integers(4, 128, size=(32, n))
    pre = rng.integers(4, 128, size=(32, noise))
    return jnp.asarray(np.concatenate([pre, x, np.full((32, 1), 3), x], 1))

  def token_losses(model, t):
    pos = jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape)
    logits, _ = model(t[:, :-1], pos[:, :-1])  # (logits, cache)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, t[:, 1:, None], -1)[..., 0]

  @nnx.jit
  def step(model, opt, t):
    loss, grads = nnx.value_and_grad(
        lambda m: token_losses(m, t)[:, -n:].mean())(model)
    opt.update(model, grads)
    return loss

  rng = np.random.default_rng(0)
  for _ in range(200):
    step(model, opt, batch(rng))
  losses = np.asarray(token_losses(model, batch(np.random.default_rng(1))))
  assert losses[:, -n:].mean() < 0.3  # copied: chance is ln(124) = 4.8 nats
  assert losses[:, :noise + n - 1].mean() > 4.0  # unpredictable stays so


@pytest.mark.parametrize("left", [True, False], ids=["left_pad", "right_pad"])
def test_causal_blocks_match_transformers(left, tmp_path, monkeypatch):
  """A pass longer than CAUSAL_BLOCK skips the masked key blocks: the logits
  still equal transformers' (blocks of 8 over 37 positions, padded rows)."""
  from rsearch_jax.models import _decoder
  monkeypatch.setattr(_decoder, "CAUSAL_BLOCK", 8)
  hf, path = _hf_model("qwen2", tmp_path)
  ours, _ = models.load_hf(path)
  err = _max_logit_error(hf, ours, [37, 20, 9, 1], left, seed=2)
  assert err < 1e-4, err
