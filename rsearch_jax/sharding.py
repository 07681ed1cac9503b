"""Device mesh, logical-axis rules, and sharded model creation.

Every parameter and activation dimension has a logical name (`vocab`, `embed`,
`q_heads`, `mlp`, `batch`, ...). One table, `rules`, maps each logical name to
zero or more mesh axes (`data`, `fsdp`, `tensor`); changing the parallelism is a
change of mesh shape or rules, never of model code.

Main entry points:
  make_mesh(data=, fsdp=, tensor=)      a `jax.sharding.Mesh` over all devices.
  use_mesh(mesh, rules)                 context in which `constrain` is active.
  constrain(x, names)                   sharding hint on an activation.
  create_sharded(ctor, mesh, rules)     build an NNX module directly sharded,
                                        so a model too large for one device
                                        never materialises on one.
  maybe_initialize_distributed(flag)    `jax.distributed.initialize()` on
                                        multi-host pods.

Default rules shard parameters over *all* batch axes (`data` and `fsdp`:
ZeRO-3 style) and over `tensor` along heads / MLP / vocab; activations shard
their batch over (`data`, `fsdp`) and their heads / MLP / vocab over `tensor`.
To keep parameters replicated across `data` (e.g. across TPU slices joined by
DCN), map `embed` to `("fsdp",)` only.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = Mapping[str, tuple[str, ...]]

DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    # parameters
    "vocab": ("tensor",),
    "embed": ("data", "fsdp"),
    "q_heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "mlp": ("tensor",),
    "layers": (),
    "norm": (),
    # activations
    "batch": ("data", "fsdp"),
    "length": (),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    "cache_length": (),
}


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one axis may be -1 to take what is left."""
  devices = list(jax.devices() if devices is None else devices)
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if len(devices) % known:
      raise ValueError(
          f"mesh: {len(devices)} devices do not divide by "
          f"{dict(zip(MESH_AXES, shape))}"
      )
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(
        f"mesh: data*fsdp*tensor = {math.prod(shape)} "
        f"({dict(zip(MESH_AXES, shape))}) but there are {len(devices)} devices"
    )
  try:
    grid = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # CPU / odd topologies: plain row-major order
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int],
                    mesh: Mesh, rules: Rules = DEFAULT_RULES) -> PartitionSpec:
  """PartitionSpec for a tensor whose dimensions have logical `names`.

  A mesh axis is used at most once per tensor (first dimension wins), axes of
  size 1 are dropped, and a dimension that does not divide evenly over its mesh
  axes falls back to fewer axes (replicated in the limit) rather than failing:
  e.g. a vocabulary of 49167 ids stays whole over tensor=2.
  """
  used: set[str] = set()
  spec = []
  for name, dim in zip(names, shape):
    if name is None:
      spec.append(None)
      continue
    if name not in rules:
      raise KeyError(f"no sharding rule for logical axis {name!r}")
    axes = [a for a in rules[name] if a in mesh.shape and mesh.shape[a] > 1
            and a not in used]
    while axes and dim % math.prod(mesh.shape[a] for a in axes):
      axes.pop()
    used.update(axes)
    spec.append(tuple(axes) if len(axes) > 1 else (axes[0] if axes else None))
  return PartitionSpec(*spec)


# --- activations -------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = (
    contextvars.ContextVar("rsearch_mesh", default=None))


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """Within this context, traced code shards activations by `rules`."""
  token = _ACTIVE.set((mesh, rules))
  try:
    with jax.sharding.use_mesh(mesh) if hasattr(jax.sharding, "use_mesh") else mesh:
      yield mesh
  finally:
    _ACTIVE.reset(token)


def active_mesh() -> Mesh | None:
  active = _ACTIVE.get()
  return active[0] if active else None


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding hint for activation `x`; a no-op outside `use_mesh`."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  spec = logical_to_spec(names, x.shape, mesh, rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# --- parameters --------------------------------------------------------------


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def state_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """NamedShardings for an NNX state whose variables carry `axes` metadata.

  Variables without `axes` (e.g. RNG counters) are replicated.
  """

  def one(var):
    value = var.get_value() if hasattr(var, "get_value") else var.value
    axes = var.get_metadata().get("axes")
    if axes is None:
      spec = PartitionSpec()
    else:
      if len(axes) != len(value.shape):
        raise ValueError(f"axes {axes} do not match shape {value.shape}")
      spec = logical_to_spec(axes, value.shape, mesh, rules)
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, state, is_leaf=_is_var)


def shard_module(module: nnx.Module, mesh: Mesh,
                 rules: Rules = DEFAULT_RULES) -> nnx.Module:
  """Moves an existing module's parameters onto the mesh (in place)."""
  state = nnx.state(module)
  nnx.update(module, jax.device_put(state, state_shardings(state, mesh, rules)))
  return module


def create_sharded(ctor: Callable[[], nnx.Module], mesh: Mesh,
                   rules: Rules = DEFAULT_RULES) -> nnx.Module:
  """Builds `ctor()` with every parameter created directly in its shards.

  The constructor is traced abstractly first to learn shapes and logical axes,
  then run under `jit` with those output shardings, so no device ever holds
  more than its share.
  """
  graphdef, abstract_state = nnx.split(nnx.eval_shape(ctor))
  shardings = state_shardings(abstract_state, mesh, rules)
  init = jax.jit(lambda: nnx.split(ctor())[1], out_shardings=shardings)
  with use_mesh(mesh, rules):
    state = init()
  return nnx.merge(graphdef, state)


def maybe_initialize_distributed(enabled: bool, **kwargs) -> None:
  """`jax.distributed.initialize` for multi-host runs (TPU pods, multi-process
  CPU tests); a no-op when disabled or already initialised."""
  if not enabled:
    return
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**kwargs)
