"""Checkpointer: exact round trips (plain and sharded), retention, atomic saves,
and clear errors for corrupted or incompatible checkpoints."""

import dataclasses
import glob
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from rsearch_jax import models, sharding
from rsearch_jax.checkpoint import Checkpointer, CheckpointError

# Orbax leaves un-awaited read coroutines behind after a restore that failed on
# a damaged file; they are collected (and reported) later, harmlessly.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

# One layer: compiling the random initialisation dominates this file's time.
CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_layers=1, num_heads=4, num_kv_heads=2)
REPO = pathlib.Path(__file__).resolve().parents[1]


def _abstract(cfg=CFG):
  """(graphdef, state of ShapeDtypeStructs) of a Decoder: nothing is computed."""
  return nnx.split(nnx.eval_shape(lambda: models.Decoder(cfg, rngs=nnx.Rngs(0))))


def _adamw_step(params):
  """AdamW state after one update, so mu / nu / count are all non-trivial."""
  opt = optax.adamw(1e-3)
  grads = jax.tree.map(lambda x: jnp.sin(x) + 0.5, params)
  return opt.update(grads, opt.init(params), params)[1]


@pytest.fixture(scope="module")
def plain():
  """(params, opt_state): a small Decoder's nnx.State on one device, every
  value random (norm scales too, so a restore that mixes up leaves shows)."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype),
                        _abstract()[1])
  return params, jax.jit(_adamw_step)(params)


def _zeros_like(tree):
  """A target of the same structure whose values differ from the checkpoint's."""
  return jax.tree.map(jnp.zeros_like, tree)


def _meta():
  return {"stage": "stage2", "stage_step": 7, "data_position": {"epoch": 1, "index": 12},
          "rng": np.asarray(jax.random.key_data(jax.random.key(3))).tolist(),
          "config": {"rl": {"kl_coef": 0.001}},
          "history": [{"step": 1, "reward": 0.25}, {"step": 2, "reward": 0.5}]}


def _host(tree):
  """Leaves as host numpy arrays (independent of the checkpoint code)."""
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(_host(a), _host(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


def test_round_trip_nnx_state_adamw_and_meta(tmp_path, plain):
  params, opt_state = plain
  ref = jax.tree.map(lambda x: 2 * x + 1, params)
  with Checkpointer(tmp_path / "ck") as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(10, params=params, opt_state=opt_state, ref_params=ref, meta=_meta())
    assert ckpt.latest_step() == 10
  # A new Checkpointer (a resumed process) restores into targets of the same
  # structure holding other values.
  with Checkpointer(tmp_path / "ck") as ckpt:
    p, o, r, meta = ckpt.restore(params_like=_zeros_like(params),
                                 opt_state_like=_zeros_like(opt_state),
                                 ref_params_like=_zeros_like(params))
    assert ckpt.read_meta(10) == _meta()
  assert isinstance(p, nnx.State) and type(o[0]) is type(opt_state[0])
  _assert_same(p, params)
  _assert_same(o, opt_state)
  _assert_same(r, ref)
  assert int(o[0].count) == 1
  assert meta == _meta()
  # The restored state plugs back into the model.
  model = nnx.merge(_abstract()[0], p)
  np.testing.assert_array_equal(np.asarray(model.layers[0].q.value),
                                np.asarray(params["layers"][0]["q"].value))


def test_restore_follows_target_dtypes_and_optional_parts(tmp_path, plain):
  params, _ = plain
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, params=params, opt_state=optax.sgd(0.1).init(params), meta={})
    bf16 = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), params)
    p, o, r, meta = ckpt.restore(1, params_like=bf16,
                                 opt_state_like=optax.sgd(0.1).init(params),
                                 ref_params_like=bf16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p))
  for x, y in zip(_host(p), _host(params)):
    np.testing.assert_array_equal(x, y.astype(jnp.bfloat16))
  # plain SGD has an empty state; no ref_params were saved.
  assert jax.tree.leaves(o) == [] and r is None and meta == {}


def _abstract_sharded(mesh):
  """ShapeDtypeStructs carrying the mesh shardings: nothing is allocated."""
  abstract = _abstract()[1]
  shardings = jax.tree.leaves(sharding.state_shardings(abstract, mesh))
  leaves, treedef = jax.tree.flatten(abstract)
  return jax.tree.unflatten(treedef, [
      jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
      for a, s in zip(leaves, shardings, strict=True)])


def test_round_trip_sharded_on_8_devices(tmp_path):
  mesh = sharding.make_mesh(fsdp=4, tensor=2)
  model = sharding.create_sharded(lambda: models.Decoder(CFG, rngs=nnx.Rngs(0)), mesh)
  params = nnx.split(model)[1]
  opt_state = jax.jit(_adamw_step)(params)
  assert params["layers"][0]["q"].value.sharding.spec == P("fsdp", "tensor", None)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, params=params, opt_state=opt_state, meta={"stage": "s1"})
    like = _abstract_sharded(mesh)
    p, o, _, _ = ckpt.restore(params_like=like, opt_state_like=_zeros_like(opt_state))
  _assert_same(p, params)
  _assert_same(o, opt_state)
  for got, target in zip(jax.tree.leaves(p), jax.tree.leaves(like)):
    assert got.sharding == target.sharding
    # each device holds only its shard, of the shape the sharding implies
    want = target.sharding.shard_shape(target.shape)
    assert all(s.data.shape == want for s in got.addressable_shards)
  q = p["layers"][0]["q"].value
  assert len({s.device for s in q.addressable_shards}) == 8
  assert q.addressable_shards[0].data.shape == (32 // 4, 4 // 2, 8)
  for got, want in zip(jax.tree.leaves(o), jax.tree.leaves(opt_state)):
    assert got.sharding == want.sharding


def test_restore_into_a_different_layout(tmp_path, plain):
  """Saved from one device, restored onto a (data=2, fsdp=4) mesh."""
  params, _ = plain
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, params=params, opt_state=(), meta={})
    like = _abstract_sharded(sharding.make_mesh(data=2, fsdp=4))
    p, _, _, _ = ckpt.restore(params_like=like)
  _assert_same(p, params)
  assert p["embed"].value.sharding.spec == P(None, ("data", "fsdp"))


def test_max_to_keep_interval_and_latest_step(tmp_path):
  params = {"w": jnp.arange(6.0).reshape(2, 3)}
  with Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2) as ckpt:
    saved = [ckpt.save(s, params=jax.tree.map(lambda x: x + s, params), opt_state={},
                       meta={"s": s}) for s in range(1, 9)]
    # a multiple of the interval, or the directory's first checkpoint
    assert saved == [True, True, False, True, False, True, False, True]
    assert ckpt.save(9, params=params, opt_state={}, meta={"s": 9}, force=True)
    assert ckpt.all_steps() == [8, 9] and ckpt.latest_step() == 9
    p, _, _, meta = ckpt.restore(8, params_like=params)
  assert sorted(os.listdir(tmp_path)) == ["8", "9"]
  np.testing.assert_array_equal(np.asarray(p["w"]), np.arange(6.0).reshape(2, 3) + 8)
  assert meta == {"s": 8}


def test_keep_steps_survive_max_to_keep(tmp_path):
  params = {"w": jnp.arange(3.0)}
  with Checkpointer(tmp_path, max_to_keep=2, keep_steps=(3, 5)) as ckpt:
    for s in range(1, 9):
      ckpt.save(s, params=jax.tree.map(lambda x: x + s, params), opt_state={},
                meta={"s": s})
    assert ckpt.all_steps() == [3, 5, 7, 8]
    p, _, _, meta = ckpt.restore(3, params_like=params)
  np.testing.assert_array_equal(np.asarray(p["w"]), np.arange(3.0) + 3)
  assert meta == {"s": 3}
  with Checkpointer(tmp_path, max_to_keep=2, keep_steps=(3, 5)) as ckpt:
    assert ckpt.all_steps() == [3, 5, 7, 8]  # reopened: nothing deleted


def test_meta_must_be_json(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError, match="step 4.*not JSON-able"):
      ckpt.save(4, params={"w": jnp.ones(2)}, opt_state={}, meta={"key": jnp.ones(2)})
    assert ckpt.latest_step() is None


def test_crash_mid_save_leaves_no_complete_checkpoint(tmp_path):
  """A process SIGKILLed after writing every array of step 2, before Orbax's
  final rename: step 2 must not look complete, step 1 restores."""
  script = textwrap.dedent(f"""
      import os, signal
      import jax.numpy as jnp
      from orbax.checkpoint._src.path import atomicity
      from rsearch_jax.checkpoint import Checkpointer
      ckpt = Checkpointer({str(tmp_path)!r})
      ckpt.save(1, params={{"w": jnp.full((64, 64), 1.0)}}, opt_state={{}}, meta={{"s": 1}})
      async def crash(self):
        os.kill(os.getpid(), signal.SIGKILL)
      atomicity.AtomicRenameTemporaryPath.finalize = crash
      ckpt.save(2, params={{"w": jnp.full((64, 64), 2.0)}}, opt_state={{}}, meta={{"s": 2}})
      """)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == -9, proc.stderr[-2000:]
  leftovers = [p for p in os.listdir(tmp_path) if p.startswith("2.")]
  assert leftovers, "the interrupted save should have left its temporary directory"
  # the arrays of step 2 were written before the crash
  assert glob.glob(str(tmp_path / leftovers[0] / "params*" / "ocdbt.process_0" / "d" / "*"))
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [1]
    p, _, _, meta = ckpt.restore(params_like={"w": jnp.zeros((64, 64))})
    assert meta == {"s": 1} and float(p["w"][0, 0]) == 1.0
    # the half-written step is cleaned up and can be saved again
    assert not [p for p in os.listdir(tmp_path) if p.startswith("2.")]
    ckpt.save(2, params={"w": jnp.full((64, 64), 2.0)}, opt_state={}, meta={"s": 2})
    assert ckpt.latest_step() == 2


# --- corrupted and incompatible checkpoints ----------------------------------


@pytest.fixture
def saved(tmp_path, plain):
  params, opt_state = plain
  with Checkpointer(tmp_path / "run") as ckpt:
    ckpt.save(5, params=params, opt_state=opt_state, meta=_meta())
  return tmp_path / "run", plain


def _restore(directory, params_like, opt_state_like):
  with Checkpointer(directory) as ckpt:
    return ckpt.restore(params_like=params_like, opt_state_like=opt_state_like)


def _where(directory):
  return re.escape(f"checkpoint {directory.resolve()} step 5")


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_array_files(saved, damage):
  directory, (params, opt_state) = saved
  files = glob.glob(str(directory / "5" / "params" / "ocdbt.process_0" / "d" / "*"))
  assert files
  for f in files:
    if damage == "truncate":
      os.truncate(f, os.path.getsize(f) // 2)
    else:
      os.remove(f)
  with pytest.raises(CheckpointError, match=_where(directory) + ".*cannot read params.*corrupted"):
    _restore(directory, params, opt_state)


def test_unreadable_meta(saved):
  directory, (params, opt_state) = saved
  meta = directory / "5" / "meta" / "metadata"
  meta.write_text(meta.read_text()[:10])
  with pytest.raises(CheckpointError, match=_where(directory) + ".*not valid JSON"):
    _restore(directory, params, opt_state)
  meta.unlink()
  with pytest.raises(CheckpointError, match=_where(directory) + ".*cannot read meta"):
    Checkpointer(directory).read_meta()


def test_missing_item_metadata(saved):
  directory, (params, opt_state) = saved
  (directory / "5" / "opt_state" / "_METADATA").unlink()
  with pytest.raises(CheckpointError, match=_where(directory) + ".*opt_state"):
    _restore(directory, params, opt_state)


def test_shape_mismatch_names_parameter_and_shapes(saved):
  directory, _ = saved
  wider = _abstract(dataclasses.replace(CFG, intermediate_size=96))[1]
  with pytest.raises(CheckpointError) as err:
    _restore(directory, wider, None)
  msg = str(err.value)
  assert str(directory.resolve()) in msg and "step 5" in msg
  assert "'layers/0/down'" in msg and "(64, 32)" in msg and "(96, 32)" in msg


def test_missing_parameter_is_named(saved):
  directory, _ = saved
  deeper = _abstract(dataclasses.replace(CFG, num_layers=2))[1]
  with pytest.raises(CheckpointError, match=_where(directory) + ".*missing from the "
                     "checkpoint: layers/1/"):
    _restore(directory, deeper, None)


def test_missing_step_and_empty_directory(tmp_path, saved):
  directory, (params, _) = saved
  with pytest.raises(CheckpointError, match="step 6 does not exist.*\\[5\\]"):
    Checkpointer(directory).restore(6, params_like=params)
  with pytest.raises(CheckpointError, match="no checkpoint in"):
    Checkpointer(tmp_path / "empty").restore(params_like=params)
