"""The jitted update: the 8-device mesh against one device, micro-batching,
the loss mask as the only path for gradient, SFT learning, and the logits
computed in chunks against all at once."""

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rsearch_jax import models, sharding
from rsearch_jax.rl import (Learner, LossConfig, NLLBatch, OptimConfig,
                            RLBatch, RLSettings, Trainer, fit_to_rollouts,
                            fitted_width, make_optimizer, nll_batch, rl_loss,
                            rows_with_gradient)
from rsearch_jax.sampling import SamplerOutput

jax.config.update("jax_default_matmul_precision", "highest")

CFG = models.ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                         num_layers=2, num_heads=4, num_kv_heads=2)
# The tests compare parameters after updates computed two ways. With eps
# 1e-8, Adam turns a near-zero gradient element's summation-order noise into
# a step of about the learning rate (seen on one CPU: one embedding entry of
# 8,192 off by 2e-5), which says nothing about the gradients compared; eps
# 1e-4 shrinks those steps and leaves the others about as they were.
OPTIM = OptimConfig(learning_rate=1e-3, warmup_steps=0, total_steps=10,
                    grad_clip=1.0, eps=1e-4)
LOSS = LossConfig(clip_eps=0.2, kl_coef=0.05, kl_kind="k3", entropy_coef=0.01,
                  aggregation="token_mean", temperature=1.0)


def _model(smear=False):
  return models.Decoder(CFG.replace(smear_keys=smear), rngs=nnx.Rngs(0))


def _rl_batch(seed=0, b=8, t=24, prompt=6):
  """Rollout-shaped random data: left-padded prompts, then sampled tokens
  with a document run (mask 0) in the middle of some rows."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, CFG.vocab_size, (b, t)).astype(np.int32)
  lengths = rng.integers(t // 2, t + 1, b)
  pad = rng.integers(0, 3, b)
  positions = np.full((b, t), -1, np.int32)
  mask = np.zeros((b, t), np.int32)
  for i in range(b):
    positions[i, pad[i]:lengths[i]] = np.arange(lengths[i] - pad[i])
    mask[i, prompt:lengths[i]] = 1
    if i % 2:
      mask[i, prompt + 3:prompt + 8] = 0  # a retrieved document
  old = np.where(mask, -rng.uniform(0.5, 4.0, (b, t)), 0).astype(np.float32)
  ref = np.where(mask, -rng.uniform(0.5, 4.0, (b, t)), 0).astype(np.float32)
  adv = np.repeat(rng.normal(size=(b, 1)), t, 1).astype(np.float32) * mask
  return RLBatch(tokens=tokens, positions=positions, loss_mask=mask,
                 old_logprobs=old, ref_logprobs=ref, advantages=adv)


def _params(learner):
  return {"/".join(map(str, k)): np.asarray(v.get_value())
          for k, v in nnx.to_flat_state(learner.params)}


@pytest.mark.parametrize("mesh_shape,smear",
                         [(dict(fsdp=4, tensor=2), False),
                          (dict(data=2, fsdp=4), False),
                          (dict(fsdp=4, tensor=2), True)],
                         ids=["fsdp4_tensor2", "data2_fsdp4",
                              "fsdp4_tensor2_smeared_keys"])
def test_rl_step_on_mesh_equals_single_device(mesh_shape, smear):
  batch = _rl_batch()
  ref = Learner(_model(smear), OPTIM, LOSS)
  ref_stats = ref.rl_step(batch)
  mesh = sharding.make_mesh(**mesh_shape)
  model = sharding.create_sharded(lambda: _model(smear), mesh)
  learner = Learner(model, OPTIM, LOSS, mesh=mesh)
  stats = learner.rl_step(batch)
  for k in ("loss", "kl", "entropy", "grad_norm"):
    np.testing.assert_allclose(stats[k], ref_stats[k], rtol=1e-5, atol=1e-6, err_msg=k)
  want, got = _params(ref), _params(learner)
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=0, err_msg=k)
  # The update really moved the parameters (so the comparison means something).
  before = {"/".join(map(str, k)): np.asarray(v.get_value())
            for k, v in nnx.to_flat_state(nnx.state(_model(smear)))}
  assert max(np.abs(want[k] - before[k]).max() for k in want) > 1e-4
  if smear:  # the mixing weights are trained like any parameter
    assert np.abs(want["layers/0/smear"] - before["layers/0/smear"]).max() > 1e-4
  # Parameters and Adam moments stay sharded like the rules say.
  q = learner.params["layers"][0]["q"].get_value()
  assert q.addressable_shards[0].data.shape != q.shape


@pytest.mark.parametrize("chunk", [0, 5])
def test_micro_batches_average_the_gradient(chunk):
  loss = LossConfig(aggregation="seq_mean_token_mean", kl_coef=0.0)
  batch = _rl_batch(seed=1)
  one = Learner(_model(), OPTIM, loss)
  four = Learner(_model(), OPTIM,
                 dataclasses.replace(loss, logits_chunk=chunk), micro_batches=4)
  s1, s4 = one.rl_step(batch), four.rl_step(batch)
  np.testing.assert_allclose(s4["grad_norm"], s1["grad_norm"], rtol=1e-5)
  p1, p4 = _params(one), _params(four)
  for k in p1:
    # Adam's first step is ~lr * sign(g) = 1e-3: an element whose gradient
    # is ~0 may move by a few percent of lr differently; everything else
    # agrees exactly.
    np.testing.assert_allclose(p4[k], p1[k], atol=5e-5, err_msg=k)


def test_masked_positions_carry_no_gradient():
  """Whatever the batch holds where loss_mask is 0 (documents, prompt,
  padding: advantages, log-probs), the update is the same."""
  batch = _rl_batch(seed=2)
  rng = np.random.default_rng(9)
  off = batch.loss_mask == 0
  noisy = RLBatch(
      tokens=batch.tokens, positions=batch.positions, loss_mask=batch.loss_mask,
      old_logprobs=np.where(off, rng.normal(size=off.shape) * 5,
                            batch.old_logprobs).astype(np.float32),
      ref_logprobs=np.where(off, rng.normal(size=off.shape) * 5,
                            batch.ref_logprobs).astype(np.float32),
      advantages=np.where(off, rng.normal(size=off.shape) * 5,
                          batch.advantages).astype(np.float32))
  a, b = Learner(_model(), OPTIM, LOSS), Learner(_model(), OPTIM, LOSS)
  sa, sb = a.rl_step(batch), b.rl_step(noisy)
  assert sa["loss"] == pytest.approx(sb["loss"], abs=1e-6)
  pa, pb = _params(a), _params(b)
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def test_fitted_width_rounds_the_longest_row_up():
  assert fitted_width([5, 17, 9], 40, 8) == 24
  assert fitted_width([5, 17, 9], 20, 8) == 20  # at most max_len
  assert fitted_width([5, 17, 9], 40, 0) == 40  # 0: never narrowed
  assert fitted_width([], 40, 8) == 8


def test_fit_to_rollouts_drops_only_padding_columns():
  b, t = 2, 32
  lengths = np.array([5, 11], np.int32)
  slots = np.arange(t)[None]
  used = slots < lengths[:, None]
  rng = np.random.default_rng(0)
  out = SamplerOutput(
      tokens=np.where(used, rng.integers(1, 99, (b, t)), 0).astype(np.int32),
      loss_mask=(used & (slots >= 3)).astype(np.int32),
      logprobs=np.where(used & (slots >= 3), -1.5, 0).astype(np.float32),
      positions=np.where(used, slots, -1).astype(np.int32),
      lengths=lengths, prompt_len=3, num_searches=np.zeros(b, np.int32),
      stop_reasons=["stop"] * b, searches=[[], []], texts=["", ""])
  cut = fit_to_rollouts(out, 8)
  assert cut.tokens.shape == cut.positions.shape == (b, 16)
  for name in ("tokens", "loss_mask", "logprobs", "positions"):
    np.testing.assert_array_equal(getattr(cut, name), getattr(out, name)[:, :16])
  assert (out.positions[:, 16:] == -1).all() and not out.loss_mask[:, 16:].any()
  assert fit_to_rollouts(out, 0).tokens.shape == (b, t)


def test_narrowed_batches_give_the_same_update():
  """An RL batch and a memorization batch cut to their longest row (as the
  curriculum does with rl.fit_multiple) update the parameters exactly as the
  full-width batches, whose extra columns are padding."""
  wide_t, prompt = 40, 6
  batch = _rl_batch(seed=4, t=24, prompt=prompt)
  extra = wide_t - 24
  wide = RLBatch(*(np.pad(x, ((0, 0), (0, extra)),
                          constant_values=-1 if name == "positions" else 0)
                   for name, x in zip(("tokens", "positions", "loss_mask",
                                       "old_logprobs", "ref_logprobs",
                                       "advantages"), dataclasses.astuple(batch))))
  rng = np.random.default_rng(5)
  pad_id = 0
  examples = [(rng.integers(1, CFG.vocab_size, prompt).tolist(),
               [(rng.integers(1, CFG.vocab_size, n).tolist(), False)])
              for n in (4, 9, 13)]
  tok = type("Tok", (), {"pad_id": pad_id})()
  mem_wide = nll_batch(tok, examples, wide_t, rows=8)
  mem_fit = nll_batch(tok, examples, wide_t, rows=8, fit_multiple=8)
  assert mem_wide.tokens.shape == (8, wide_t)
  assert mem_fit.tokens.shape == (8, 24)  # 6 + 13 = 19 tokens, rounded to 24
  loss = dataclasses.replace(LOSS, mem_coef=0.5)
  a, b = Learner(_model(), OPTIM, loss), Learner(_model(), OPTIM, loss)
  sa, sb = a.rl_step(wide, mem_wide), b.rl_step(batch, mem_fit)
  for k in ("loss", "kl", "entropy", "mem_nll", "grad_norm"):
    assert sa[k] == pytest.approx(sb[k], rel=1e-5, abs=1e-6), k
  pa, pb = _params(a), _params(b)
  for k in pa:  # Adam's first step divides by |g|: a gradient of a few ulps
    # summed in another order moves a parameter by ~1e-6 on some CPUs.
    np.testing.assert_allclose(pb[k], pa[k], atol=1e-5, err_msg=k)


def _varied_batch(seed, b=16, t=40):
  """Rollouts whose lengths differ widely (short ones without a document,
  long ones with), one row with no sampled token."""
  batch = _rl_batch(seed=seed, b=b, t=t)
  rng = np.random.default_rng(seed + 100)
  ends = np.where(rng.random(b) < 0.5, rng.integers(9, 17, b), rng.integers(24, t + 1, b))
  slots = np.arange(t)[None]
  keep = slots < ends[:, None]
  mask = np.where(keep, batch.loss_mask, 0)
  mask[3] = 0
  return RLBatch(
      tokens=np.where(keep, batch.tokens, 0).astype(np.int32),
      positions=np.where(keep, batch.positions, -1).astype(np.int32),
      loss_mask=mask.astype(np.int32),
      old_logprobs=np.where(mask, batch.old_logprobs, 0).astype(np.float32),
      ref_logprobs=np.where(mask, batch.ref_logprobs, 0).astype(np.float32),
      advantages=np.where(mask, batch.advantages, 0).astype(np.float32))


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_length_groups_give_the_one_pass_update(aggregation):
  """Rows sorted by length and run as 4 narrower passes, each weighed by its
  share of the sampled tokens (or rows): the same loss, statistics and
  parameters as one pass over the whole batch, two updates in a row.
  (seq_mean_token_sum weighs by the rows' share as seq_mean_token_mean.)"""
  loss = dataclasses.replace(LOSS, aggregation=aggregation, mem_coef=0.5)
  batches = [_varied_batch(seed) for seed in (11, 12)]
  tok = type("Tok", (), {"pad_id": 0})()
  rng = np.random.default_rng(13)
  mem = nll_batch(tok, [(rng.integers(1, CFG.vocab_size, 6).tolist(),
                         [(rng.integers(1, CFG.vocab_size, 7).tolist(), False)])
                        for _ in range(2)], 40, rows=4)
  one = Learner(_model(), OPTIM, loss)
  grouped = Learner(_model(), OPTIM, loss, length_groups=4, fit_multiple=8)
  widths = []
  grads_fn = grouped._rl_grads
  grouped._rl_grads = lambda p, b, *e: (widths.append(b.tokens.shape), grads_fn(p, b, *e))[1]
  for batch in batches:
    s1, s4 = one.rl_step(batch, mem), grouped.rl_step(batch, mem)
    for k in s1:
      assert s4[k] == pytest.approx(s1[k], rel=1e-5, abs=1e-7), k
  assert s1["clip_frac"] > 0  # the second update's ratio is clipped somewhere
  # Four groups of 4 rows, the short rows' passes narrower than the batch.
  assert [w[0] for w in widths] == [4] * 8
  assert min(w[1] for w in widths) <= 16 < max(w[1] for w in widths)
  p1, p4 = _params(one), _params(grouped)
  for k in p1:
    np.testing.assert_allclose(p4[k], p1[k], atol=2e-6, err_msg=k)


def _with_dead_rows(batch, dead):
  """`batch` with the advantage of rows `dead` set to 0 (all rollouts of a
  prompt with one reward)."""
  adv = np.array(batch.advantages)
  adv[list(dead)] = 0.0
  return dataclasses.replace(batch, advantages=adv)


def test_rows_with_gradient():
  batch = _with_dead_rows(_varied_batch(21), [0, 1, 2])  # row 3: no token
  none = dataclasses.replace(LOSS, kl_coef=0.0, entropy_coef=0.0)
  want = np.ones(16, bool)
  want[[0, 1, 2, 3]] = False
  np.testing.assert_array_equal(rows_with_gradient(batch, none), want)
  # KL folded into the advantages adds no loss term of its own.
  folded = dataclasses.replace(none, kl_coef=0.1, kl_kind="k1_reward")
  np.testing.assert_array_equal(rows_with_gradient(batch, folded), want)
  # An entropy or a KL loss term has gradient on every sampled token.
  want[[0, 1, 2]] = True
  for loss in (dataclasses.replace(none, entropy_coef=0.01),
               dataclasses.replace(none, kl_coef=0.1, kl_kind="k3")):
    np.testing.assert_array_equal(rows_with_gradient(batch, loss), want)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_sum"])
def test_rows_without_gradient_are_left_out_of_the_same_update(aggregation):
  """Half the rows with advantage 0 (and one without a sampled token): the
  length groups run 2 passes of 4 rows instead of 4 and give the one-pass
  update over all 16 rows, two updates in a row; the statistics are those of
  the rows run, as a one-pass update on those rows alone reports them."""
  loss = dataclasses.replace(LOSS, kl_coef=0.0, entropy_coef=0.0,
                             aggregation=aggregation)
  dead = [0, 1, 2, 4, 5, 6, 9]  # and 3, which has no sampled token
  batches = [_with_dead_rows(_varied_batch(seed), dead) for seed in (16, 17)]
  live = [i for i in range(16) if i not in dead + [3]]
  one = Learner(_model(), OPTIM, loss)
  grouped = Learner(_model(), OPTIM, loss, length_groups=4, fit_multiple=8)
  alone = Learner(_model(), OPTIM, loss)  # the live rows only, first update
  shapes = []
  grads_fn = grouped._rl_grads
  grouped._rl_grads = lambda p, b, *e: (shapes.append(b.tokens.shape), grads_fn(p, b, *e))[1]
  for n, batch in enumerate(batches):
    s1, s2 = one.rl_step(batch), grouped.rl_step(batch)
    assert grouped.last_passes == 2
    for k in ("loss", "pg_loss", "grad_norm"):
      assert s2[k] == pytest.approx(s1[k], rel=1e-5, abs=1e-7), k
    if n == 0:
      sub = jax.tree.map(lambda x: x[live], batch)
      ref = alone.rl_step(sub)
      for k in ("entropy", "approx_kl", "ratio_mean", "clip_frac"):
        assert s2[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), k
  assert s1["clip_frac"] > 0  # the second update is not at ratio 1
  assert [w[0] for w in shapes] == [4] * 4
  p1, p2 = _params(one), _params(grouped)
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], atol=2e-6, err_msg=k)
  # Switched off, all four passes run.
  full = Learner(_model(), OPTIM, loss, length_groups=4, fit_multiple=8,
                 skip_zero_gradient=False)
  full.rl_step(batches[0])
  assert full.last_passes == 4


def test_length_groups_on_a_mesh_equal_one_pass_on_one_device():
  batch = _varied_batch(14)
  ref = Learner(_model(), OPTIM, LOSS)
  ref_stats = ref.rl_step(batch)
  mesh = sharding.make_mesh(data=2, fsdp=4)
  model = sharding.create_sharded(_model, mesh)
  learner = Learner(model, OPTIM, LOSS, mesh=mesh, length_groups=2,
                    fit_multiple=8)
  stats = learner.rl_step(batch)
  for k in ("loss", "kl", "entropy", "grad_norm"):
    np.testing.assert_allclose(stats[k], ref_stats[k], rtol=1e-5, atol=1e-6, err_msg=k)
  want, got = _params(ref), _params(learner)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=0, err_msg=k)
  # The batch is split over data x fsdp = 8 devices: groups of 4 rows are not.
  odd = Learner(sharding.create_sharded(_model, mesh), OPTIM, LOSS, mesh=mesh,
                length_groups=4)
  with pytest.raises(ValueError, match=r"rl.length_groups=4: 16 rows .* multiple of 8"):
    odd.rl_step(batch)


def test_length_groups_need_one_micro_batch():
  with pytest.raises(ValueError, match=r"rl.length_groups=2 needs rl.micro_batches=1"):
    Learner(_model(), OPTIM, LOSS, micro_batches=2, length_groups=2)
  with pytest.raises(ValueError, match=r"rl.length_groups=3: 16 rows do not split"):
    Learner(_model(), OPTIM, LOSS, length_groups=3).rl_step(_varied_batch(15))
  batch = _varied_batch(15)
  mem = NLLBatch(batch.tokens, batch.positions, batch.loss_mask)
  with pytest.raises(ValueError, match="`mem` with `share`"):
    rl_loss(_model(), batch, LOSS, mem, share=jnp.array([0.5, 0.5]))


def test_memorization_rows_cut_to_the_rewrites_give_the_same_update():
  """The curriculum gives a step's memorization batch only as many rows as
  its rewrites (rounded up, Trainer._mem_rows): the update equals the one
  with the batch padded to every rollout's row, with and without
  mini-batches (whose slices j::n spread the rewrites the same way)."""
  batch = _rl_batch(seed=6, t=24)
  rng = np.random.default_rng(7)
  examples = [(rng.integers(1, CFG.vocab_size, 6).tolist(),
               [(rng.integers(1, CFG.vocab_size, n).tolist(), False)])
              for n in (5, 11, 7)]
  tok = type("Tok", (), {"pad_id": 0})()
  full = nll_batch(tok, examples, 24, rows=8)
  cut = nll_batch(tok, examples, 24, rows=4)
  loss = dataclasses.replace(LOSS, mem_coef=0.5)
  a, b = Learner(_model(), OPTIM, loss), Learner(_model(), OPTIM, loss)
  sa, sb = a.rl_step(batch, full), b.rl_step(batch, cut)
  assert sa["mem_nll"] == pytest.approx(sb["mem_nll"], rel=1e-6)
  pa, pb = _params(a), _params(b)
  for k in pa:
    np.testing.assert_allclose(pb[k], pa[k], atol=1e-6, err_msg=k)
  # Two mini-batches: slices j::2 of 8 rows and of 4 rows hold the same
  # rewrites (0 and 2 in the first, 1 in the second).
  for j in range(2):
    np.testing.assert_array_equal(full.tokens[j::2][:2], cut.tokens[j::2])
    np.testing.assert_array_equal(full.loss_mask[j::2][:2], cut.loss_mask[j::2])
    assert not full.loss_mask[j::2][2:].any()


def test_memorization_rows_round_up_per_mini_batch():
  rows = lambda n, mini=1, micro=1: Trainer._mem_rows(
      SimpleNamespace(rl=RLSettings(mini_batches=mini, micro_batches=micro)),
      n, 64)
  assert [rows(n) for n in (1, 16, 17, 40, 64)] == [16, 16, 32, 48, 64]
  assert [rows(n, mini=2) for n in (1, 32, 33)] == [32, 32, 64]
  assert rows(3, micro=2) == 64  # micro-batches keep every row (their means)
  assert rows(5, mini=8) == 64  # never more than the rollouts


def test_first_update_ratio_is_one_against_own_logprobs():
  """With old log-probs from the learner's own teacher-forced pass, the
  policy ratio is exactly 1: no clipping, approx-KL 0."""
  batch = _rl_batch(seed=3)
  learner = Learner(_model(), OPTIM, LOSS)
  own = np.asarray(learner.logprobs(batch.tokens, batch.positions))
  batch = RLBatch(batch.tokens, batch.positions, batch.loss_mask,
                  np.where(batch.loss_mask, own, 0).astype(np.float32),
                  batch.ref_logprobs, batch.advantages)
  stats = learner.rl_step(batch)
  assert stats["clip_frac"] == 0.0
  assert abs(stats["approx_kl"]) < 1e-6


def test_sft_step_learns_a_sequence():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, CFG.vocab_size, (4, 16)).astype(np.int32)
  positions = np.tile(np.arange(16, dtype=np.int32), (4, 1))
  mask = np.zeros((4, 16), np.int32)
  mask[:, 4:] = 1  # prompt masked out
  batch = NLLBatch(tokens, positions, mask)
  learner = Learner(_model(), OptimConfig(learning_rate=3e-3, total_steps=40,
                                          schedule="constant"), LOSS)
  first = learner.sft_step(batch)["loss"]
  for _ in range(39):
    last = learner.sft_step(batch)["loss"]
  assert first > np.log(CFG.vocab_size) - 0.5  # starts near uniform
  assert last < 0.5 * first, (first, last)


def _mem_batch(seed=4, b=8, t=24):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, CFG.vocab_size, (b, t)).astype(np.int32)
  positions = np.tile(np.arange(t, dtype=np.int32), (b, 1))
  mask = (rng.uniform(size=(b, t)) < 0.7).astype(np.int32)
  return NLLBatch(tokens, positions, mask)


def test_chunked_logits_equal_all_at_once():
  """rl_loss (policy, KL, entropy, memorization NLL) with the logits in
  chunks of 5 (T = 24: four full chunks and a partial one) and block remat,
  against all logits at once: loss, statistics and every parameter's
  gradient; then the learner's scoring and SFT update."""
  batch, mem = _rl_batch(seed=5), _mem_batch()
  full = dataclasses.replace(LOSS, mem_coef=0.1, logits_chunk=0)
  chunked = dataclasses.replace(full, logits_chunk=5)
  graphdef, params = nnx.split(_model())
  remat_graphdef, _ = nnx.split(models.Decoder(CFG.replace(remat=True),
                                               rngs=nnx.Rngs(0)))

  def grads(gd, cfg):
    def f(p):
      return rl_loss(nnx.merge(gd, p), batch, cfg, mem)
    return jax.jit(jax.grad(f, has_aux=True))(params)

  want_g, want = grads(graphdef, full)
  got_g, got = grads(remat_graphdef, chunked)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
  flat_want = dict(nnx.to_flat_state(want_g))
  flat_got = dict(nnx.to_flat_state(got_g))
  assert np.abs(np.asarray(flat_want[("embed",)].get_value())).max() > 1e-4
  for k, v in flat_want.items():
    np.testing.assert_allclose(flat_got[k].get_value(), v.get_value(),
                               atol=1e-5, err_msg=str(k))

  a, b = Learner(_model(), OPTIM, full), Learner(_model(), OPTIM, chunked)
  np.testing.assert_allclose(b.logprobs(batch.tokens, batch.positions, 0.7),
                             a.logprobs(batch.tokens, batch.positions, 0.7),
                             atol=1e-5)
  sa, sb = a.sft_step(mem), b.sft_step(mem)
  assert sb["loss"] == pytest.approx(sa["loss"], abs=1e-5)
  pa, pb = _params(a), _params(b)
  for k in pa:
    np.testing.assert_allclose(pb[k], pa[k], atol=5e-5, err_msg=k)


def test_bad_logits_chunk_is_a_clear_error():
  with pytest.raises(ValueError, match="loss.logits_chunk=-1"):
    LossConfig(logits_chunk=-1)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_rl_step_with_memorization_is_one_step_on_the_summed_loss(micro_batches):
  """Learner.rl_step compiles the policy and memorization gradients apart;
  its update must be one AdamW step on the gradient of rl_loss with `mem`
  (policy + KL + entropy + mem_coef x NLL), computed here by jax.grad and
  optax directly, micro-batched the same way."""
  batch, mem = _rl_batch(seed=6), _mem_batch(seed=7)
  cfg = dataclasses.replace(LOSS, mem_coef=0.3)
  learner = Learner(_model(), OPTIM, cfg, micro_batches=micro_batches)
  stats = learner.rl_step(batch, mem)

  graphdef, params = nnx.split(_model())
  n = micro_batches
  part = lambda tree, j: jax.tree.map(
      lambda x: x.reshape((n, -1) + x.shape[1:])[j], tree)  # as _split_micro
  grads, losses, nlls = None, [], []
  for j in range(n):
    def f(p):
      return rl_loss(nnx.merge(graphdef, p), part(batch, j), cfg, part(mem, j))
    g, s = jax.grad(f, has_aux=True)(params)
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    losses.append(float(s["loss"]))
    nlls.append(float(s["mem_nll"]))
  grads = jax.tree.map(lambda x: x / n, grads)
  tx = make_optimizer(OPTIM)
  updates, _ = tx.update(grads, tx.init(params), params)
  want = optax.apply_updates(params, updates)

  assert stats["loss"] == pytest.approx(np.mean(losses), abs=1e-5)
  assert stats["mem_nll"] == pytest.approx(np.mean(nlls), abs=1e-5)
  assert stats["mem_nll"] > 1.0  # the memorization term is really there
  flat_want = dict(nnx.to_flat_state(want))
  for k, v in nnx.to_flat_state(learner.params):
    np.testing.assert_allclose(np.asarray(v.get_value()),
                               np.asarray(flat_want[k].get_value()),
                               atol=1e-5, err_msg=str(k))
  # (AdamW's first step is about lr * sign(g), so 1e-5 is 1% of a step;
  # without the memorization batch the parameters move elsewhere.)
  alone = Learner(_model(), OPTIM, cfg, micro_batches=micro_batches)
  alone.rl_step(batch)
  got = _params(learner)
  assert max(np.abs(np.asarray(v.get_value()) - got["/".join(map(str, k))]).max()
             for k, v in nnx.to_flat_state(alone.params)) > 1e-4
