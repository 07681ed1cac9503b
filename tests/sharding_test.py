"""The decoder on the simulated 8-device CPU mesh: same numbers as on one
device, and every device holds about an eighth of the parameters."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rsearch_jax import models, sharding

CFG = models.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                         num_layers=2, num_heads=4, num_kv_heads=2)
MESHES = {"fsdp4_tensor2": dict(fsdp=4, tensor=2),
          "data2_fsdp4": dict(data=2, fsdp=4)}


def test_eight_simulated_devices():
  assert jax.device_count() == 8, "tests/conftest.py must set XLA_FLAGS"


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 256, (8, 12)), jnp.int32)
  lengths = np.array([12, 5, 9, 1, 12, 7, 3, 10])
  mask = jnp.asarray(np.arange(12)[None] >= 12 - lengths[:, None])  # left pad
  return tokens, models.positions_from_mask(mask), mask


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
def test_sharded_forward_matches_single_device(mesh_name):
  mesh = sharding.make_mesh(**MESHES[mesh_name])
  ctor = lambda: models.Decoder(CFG, rngs=nnx.Rngs(7))
  ref_model = ctor()
  tokens, positions, mask = _batch()
  ref, _ = ref_model(tokens, positions)

  model = sharding.create_sharded(ctor, mesh)
  batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  tokens_s = jax.device_put(tokens, batch_sharding)
  positions_s = jax.device_put(positions, batch_sharding)
  with sharding.use_mesh(mesh):
    out, _ = nnx.jit(lambda m, t, p: m(t, p))(model, tokens_s, positions_s)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(ref)[valid],
                             atol=1e-5, rtol=0)
  # The sharded model was created with the same values (to the last ulp:
  # jit may fuse the init's scale differently), not just the same shapes.
  np.testing.assert_allclose(np.asarray(model.layers[1].q[...]),
                             np.asarray(ref_model.layers[1].q[...]), rtol=1e-6)


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
def test_each_device_holds_an_eighth(mesh_name):
  mesh = sharding.make_mesh(**MESHES[mesh_name])
  model = sharding.create_sharded(
      lambda: models.Decoder(CFG, rngs=nnx.Rngs(0)), mesh)
  total = 0
  per_device = {d: 0 for d in jax.devices()}
  for path, var in nnx.to_flat_state(nnx.state(model)):
    arr = var.get_value()
    total += arr.size
    for shard in arr.addressable_shards:
      per_device[shard.device] += math.prod(shard.data.shape)
    if arr.ndim >= 2 and "norm" not in str(path[-1]):  # every matrix: exactly 1/8
      shard_shape = arr.addressable_shards[0].data.shape
      assert math.prod(shard_shape) * 8 == arr.size, (path, arr.shape, shard_shape)
  assert total == CFG.num_params()
  for device, count in per_device.items():
    # matrices split 8 ways; only the small norm vectors are replicated
    assert total / 8 <= count < total / 8 * 1.05, (device, count, total)


def test_uneven_dimension_falls_back_to_replication():
  mesh = sharding.make_mesh(fsdp=4, tensor=2)
  spec = sharding.logical_to_spec(("vocab", "embed"), (49167, 576), mesh)
  assert spec == PartitionSpec(None, "fsdp")
  spec = sharding.logical_to_spec(("vocab", "embed"), (49152, 576), mesh)
  assert spec == PartitionSpec("tensor", "fsdp")


def test_mesh_errors_name_the_shape():
  with pytest.raises(ValueError, match="there are 8 devices"):
    sharding.make_mesh(data=3, fsdp=1, tensor=1)
  with pytest.raises(KeyError, match="no sharding rule for logical axis 'bogus'"):
    sharding.logical_to_spec(("bogus",), (8,), sharding.make_mesh())
