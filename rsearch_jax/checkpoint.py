"""Training checkpoints: parameters, optimizer state, reference policy and run state.

Main entry point:
  Checkpointer(directory, max_to_keep=3, save_interval_steps=1)
    .save(step, params=, opt_state=, ref_params=None, meta=)   one checkpoint
    .latest_step() -> int | None                               newest complete step
    .restore(step=None, params_like=, opt_state_like=, ref_params_like=None)
        -> (params, opt_state, ref_params, meta)
    .read_meta(step=None) -> dict                              meta alone, cheap
    .wait(), .close()
  CheckpointError                   a corrupted or incompatible checkpoint.

A step is a directory `<directory>/<step>/` with one Orbax item per part:
`params`, `opt_state`, `ref_params` (when given) as PyTrees of arrays, and
`meta` as JSON (curriculum stage, data position, PRNG key data, config,
metrics history: whatever the trainer needs to continue exactly).

Any pytree is stored as a nested dict keyed by its path (`layers/0/q`), so
`flax.nnx.State`, optax's named tuples and plain dicts all store the same way
and a mismatch can be reported by parameter name. Restoring goes back into the
structure, dtypes and shardings of the `*_like` targets (concrete arrays or
`jax.ShapeDtypeStruct`s with `.sharding`): each device reads only its own
shards, so a model too large for one device never materialises on one.

Saving is atomic: Orbax writes into a temporary directory and renames it when
every part is written, so a crash mid-save leaves only a temporary directory
that `latest_step` ignores (and the next `Checkpointer` removes).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

_ARRAY_ITEMS = ("params", "opt_state", "ref_params")
_META = "meta"


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored (corrupted, incompatible or missing)."""


def _key_name(entry) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry).strip(".[]'\"")


def _flatten(tree: Any, what: str) -> tuple[list[tuple[str, ...]], list[Any], Any]:
  """(paths, leaves, treedef) of `tree`; a variable's `.value` is its own name.

  E.g. an nnx.State `{'layers': {0: {'q': Param(value=...)}}}` has the single
  path `('layers', '0', 'q')`.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths, leaves, seen = [], [], set()
  for keys, leaf in flat:
    parts = tuple(_key_name(k) for k in keys)
    if (len(keys) > 1 and isinstance(keys[-1], jax.tree_util.GetAttrKey)
        and keys[-1].name == "value"):
      parts = parts[:-1]
    if parts in seen:
      raise ValueError(f"{what}: two leaves share the path {'/'.join(parts)!r}")
    seen.add(parts)
    paths.append(parts)
    leaves.append(leaf)
  # A path that is also a prefix of another cannot be stored as a nested dict.
  for parts in paths:
    for i in range(1, len(parts)):
      if parts[:i] in seen:
        raise ValueError(f"{what}: {'/'.join(parts[:i])!r} is both a leaf and a "
                         f"subtree (of {'/'.join(parts)!r})")
  return paths, leaves, treedef


def _nest(paths, values) -> dict:
  out: dict = {}
  for parts, value in zip(paths, values):
    node = out
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return out


def _lookup(nested, parts):
  for p in parts:
    nested = nested[p]
  return nested


def _nested_paths(nested, prefix=()) -> dict[tuple[str, ...], Any]:
  """{path: leaf} of a nested dict (e.g. Orbax's metadata tree)."""
  if isinstance(nested, dict):
    out = {}
    for k, v in nested.items():
      out.update(_nested_paths(v, prefix + (str(k),)))
    return out
  return {prefix: nested}


def _to_storable(leaf, where: str):
  # Orbax stores jax/numpy arrays and Python scalars; anything else (e.g. a
  # numpy scalar) becomes a numpy array.
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
      leaf.dtype, jax.dtypes.prng_key):
    raise TypeError(f"{where} is a typed PRNG key; store "
                    "jax.random.key_data(key).tolist() in meta instead")
  if isinstance(leaf, (jax.Array, np.ndarray, int, float)):
    return leaf
  return np.asarray(leaf)


def _short(e: BaseException) -> str:
  """An Orbax / TensorStore error and its root cause, without the spec dumps."""

  def one(x):
    text = str(x)
    for cut in (" See full TensorStore details", " [tensorstore_spec"):
      text = text.split(cut)[0]
    return f"{type(x).__name__}: {text[:300]}"

  root, seen = e, {id(e)}
  while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
    root = nxt
    seen.add(id(root))
  return one(e) if root is e else f"{one(e)} (caused by {one(root)})"


def _restore_arg(leaf):
  """The Orbax restore argument that reproduces `leaf`'s type, dtype, sharding."""
  if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:  # an abstract leaf without placement: first local device
      sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return ocp.ArrayRestoreArgs(sharding=sharding, global_shape=tuple(leaf.shape),
                                dtype=leaf.dtype)
  if isinstance(leaf, (np.ndarray, np.generic)):
    return ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
  if isinstance(leaf, (bool, int, float)):
    return ocp.RestoreArgs(restore_type=type(leaf))
  raise TypeError(f"cannot restore into a leaf of type {type(leaf).__name__}")


def _abstract(leaf):
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  return leaf


class Checkpointer:
  """Saves and restores training state under one directory (see module doc).

  Attributes:
    directory: absolute path of the checkpoint directory.
  """

  def __init__(self, directory, max_to_keep: int | None = 3,
               save_interval_steps: int = 1, *, async_save: bool = False,
               keep_steps: Sequence[int] = ()):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where step directories live.
      max_to_keep: newest checkpoints kept; older ones are deleted after each
        save (None: keep all).
      save_interval_steps: `save` writes a step that is a multiple of this, the
        directory's first checkpoint, or any step with `force=True`; it skips
        (returns False) a step not after the latest checkpoint.
      async_save: when False (default), `save` returns only once the
        checkpoint is complete on disk. When True, `save` returns after the
        arrays are copied off the devices and writing continues in the
        background; call `wait()` before relying on it (the next `save`,
        `restore` and `close` wait by themselves).
      keep_steps: steps never deleted by `max_to_keep` (e.g. each curriculum
        stage's last step, to evaluate or branch from later).
    """
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
    self.directory = pathlib.Path(directory).expanduser().resolve()
    self._async = async_save
    keep = dict(max_to_keep=max_to_keep)
    if keep_steps and max_to_keep is not None:
      policies = ocp.checkpoint_managers
      keep = dict(preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(max_to_keep),
          policies.CustomSteps(sorted({int(k) for k in keep_steps}))]))
    options = ocp.CheckpointManagerOptions(
        **keep, save_interval_steps=save_interval_steps,
        create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save)
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    except Exception as e:  # e.g. a file where the directory should be
      raise CheckpointError(f"cannot open checkpoint directory {self.directory}: "
                            f"{type(e).__name__}: {e}") from e

  # -- writing ----------------------------------------------------------------

  def save(self, step: int, *, params, opt_state, ref_params=None,
           meta: dict, force: bool = False) -> bool:
    """Writes checkpoint `step`; returns False when the interval skips it.

    Args:
      step: the global training step (a directory name; must increase).
      params: pytree of arrays (e.g. an `nnx.State`), possibly sharded.
      opt_state: the optimizer state pytree.
      ref_params: the frozen reference policy, or None to store none.
      meta: JSON-able dict (checked here, before anything is written); it
        comes back as JSON gives it (tuples as lists, non-string keys as
        strings).
      force: save even if `step` is off the `save_interval_steps` grid.
    """
    try:
      meta_json = json.loads(json.dumps(meta, allow_nan=True))
    except (TypeError, ValueError) as e:
      raise TypeError(f"checkpoint meta for step {step} is not JSON-able: {e}") from e
    items = {"params": params, "opt_state": opt_state}
    if ref_params is not None:
      items["ref_params"] = ref_params
    args = {}
    for name, tree in items.items():
      paths, leaves, _ = _flatten(tree, name)
      if not leaves:  # e.g. plain SGD's EmptyState: Orbax refuses empty items
        continue
      storable = [_to_storable(x, f"{name} leaf {'/'.join(p)!r}")
                  for p, x in zip(paths, leaves)]
      args[name] = ocp.args.PyTreeSave(_nest(paths, storable))
    args[_META] = ocp.args.JsonSave(meta_json)
    saved = self._manager.save(int(step), args=ocp.args.Composite(**args), force=force)
    if not self._async:
      self._manager.wait_until_finished()
    return saved

  def wait(self) -> None:
    """Blocks until any asynchronous save has been committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's resources."""
    self._manager.close()

  # -- reading ----------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Complete checkpoints on disk, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """Newest complete checkpoint, or None when there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def _step_dir(self, step: int | None) -> tuple[int, pathlib.Path]:
    if step is None:
      step = self.latest_step()
      if step is None:
        raise CheckpointError(f"no checkpoint in {self.directory}")
    step, steps = int(step), self.all_steps()
    if step not in steps:
      raise CheckpointError(f"checkpoint {self.directory} step {step} does not "
                            f"exist (steps on disk: {steps})")
    return step, self.directory / str(step)

  def _error(self, step: int, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {self.directory} step {step}: {what}")

  def read_meta(self, step: int | None = None) -> dict:
    """The `meta` dict saved with `step` (default: the latest)."""
    self.wait()
    step, step_dir = self._step_dir(step)
    path = step_dir / _META / "metadata"
    try:
      text = path.read_text()
    except OSError as e:
      raise self._error(step, f"cannot read meta {path}: {e}") from e
    try:
      meta = json.loads(text)
    except ValueError as e:
      raise self._error(step, f"meta {path} is not valid JSON ({e}): the "
                        "checkpoint is corrupted") from e
    if not isinstance(meta, dict):
      raise self._error(step, f"meta {path} holds a {type(meta).__name__}, not a dict")
    return meta

  def _stored_shapes(self, step: int, step_dir: pathlib.Path, name: str):
    """{path: shape or None} of item `name` as written, from Orbax's metadata."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
      tree = handler.metadata(step_dir / name).tree
    except FileNotFoundError as e:
      raise self._error(step, f"{name} is incomplete ({e})") from e
    except Exception as e:
      raise self._error(step, f"cannot read the metadata of {name}: "
                        f"{_short(e)}") from e
    finally:
      handler.close()
    return {k: (tuple(v.shape) if getattr(v, "shape", None) is not None else None)
            for k, v in _nested_paths(tree).items()}

  def _check_compatible(self, step, name, stored, wanted) -> None:
    missing = [p for p in wanted if p not in stored]
    extra = [p for p in stored if p not in wanted]
    if missing or extra:
      def show(ps):
        names = ["/".join(p) for p in ps[:5]]
        return ", ".join(names) + (f" (+{len(ps) - 5} more)" if len(ps) > 5 else "")
      parts = []
      if missing:
        parts.append(f"missing from the checkpoint: {show(missing)}")
      if extra:
        parts.append(f"in the checkpoint but not in the target: {show(extra)}")
      raise self._error(step, f"{name} does not match the target structure; "
                        + "; ".join(parts))
    for parts, leaf in wanted.items():
      shape = getattr(leaf, "shape", None)
      if shape is None or stored[parts] is None:
        continue
      if tuple(shape) != stored[parts]:
        raise self._error(step, f"{name} parameter {'/'.join(parts)!r} has shape "
                          f"{stored[parts]} in the checkpoint but the target "
                          f"expects {tuple(shape)}")

  def _restore_item(self, step: int, step_dir: pathlib.Path, name: str, like):
    """Item `name` of `step`, restored into the structure of `like`."""
    paths, leaves, treedef = _flatten(like, f"{name}_like")
    if not (step_dir / name).is_dir():
      if not leaves:  # saved as nothing (an empty optimizer state)
        return jax.tree_util.tree_unflatten(treedef, [])
      raise self._error(step, f"{name} is missing ({step_dir / name} does not exist)")
    leaves = [_abstract(x) for x in leaves]
    self._check_compatible(step, name, self._stored_shapes(step, step_dir, name),
                           dict(zip(paths, leaves)))
    try:
      restore_args = _nest(paths, [_restore_arg(x) for x in leaves])
    except TypeError as e:
      raise TypeError(f"{name}_like: {e}") from e
    args = ocp.args.PyTreeRestore(item=_nest(paths, leaves), restore_args=restore_args)
    try:
      nested = self._manager.restore(step, args=ocp.args.Composite(**{name: args}))[name]
    except Exception as e:
      # TensorStore reports a truncated or deleted array file from deep inside
      # Orbax; say which checkpoint is broken instead.
      raise self._error(step, f"cannot read {name} (the checkpoint is corrupted "
                        f"or incomplete): {_short(e)}") from e
    return jax.tree_util.tree_unflatten(treedef, [_lookup(nested, p) for p in paths])

  def restore(self, step: int | None = None, *, params_like, opt_state_like=None,
              ref_params_like=None):
    """Restores checkpoint `step` (default: the latest).

    Args:
      step: which step; None for the latest.
      params_like: target pytree of `jax.Array`s or `jax.ShapeDtypeStruct`s
        (with `.sharding`); the result has its structure, dtypes and shardings.
        Leaves without a sharding land on the first local device.
      opt_state_like: the same for the optimizer state; None skips it.
      ref_params_like: the same for the reference parameters; None skips them.

    Returns:
      (params, opt_state, ref_params, meta). opt_state is None when
      opt_state_like is None; ref_params is None when ref_params_like is None
      or when the checkpoint was saved without reference parameters.

    Raises:
      CheckpointError: the step is missing, or a part of it is unreadable,
        truncated, or does not match the targets (a missing or extra
        parameter, or a shape that differs: named with both shapes).
    """
    self.wait()
    step, step_dir = self._step_dir(step)
    meta = self.read_meta(step)
    params = self._restore_item(step, step_dir, "params", params_like)
    opt_state = ref_params = None
    if opt_state_like is not None:
      opt_state = self._restore_item(step, step_dir, "opt_state", opt_state_like)
    if ref_params_like is not None and (step_dir / "ref_params").is_dir():
      ref_params = self._restore_item(step, step_dir, "ref_params", ref_params_like)
    return params, opt_state, ref_params, meta

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


__all__ = ["Checkpointer", "CheckpointError"]
