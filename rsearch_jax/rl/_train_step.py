"""The jitted, sharded update: RL (policy gradient + KL + memorization NLL) and SFT.

Main entry points:
  OptimConfig, make_optimizer(cfg)       optax AdamW, warmup + cosine, clipping.
  LossConfig                             the RL objective's knobs.
  RLBatch, NLLBatch                      what one update consumes.
  Learner(model, optim, loss, mesh=...)  holds params + optimizer state
                                         (sharded by the mesh rules) and
                                         runs `rl_step`, `sft_step`, and
                                         `logprobs` (teacher-forced scoring).
  fitted_width(lengths, max_len, multiple)
                                         how many columns an update needs.
  rows_with_gradient(batch, loss)        which rollouts an RL update can
                                         learn from.

Every token term (policy loss, KL, entropy, statistics) is masked by the
sampler's loss mask, so retrieved documents never receive gradient. With
`micro_batches > 1` the batch is split along rows and gradients are averaged
over the micro-batches (each micro-batch's loss is its own masked mean, as in
OpenRLHF). With `length_groups > 1` the rows are sorted by length and split
into that many groups, each its own pass as wide as its longest row; every
group's terms are weighed by its share of the batch's sampled tokens (or
rows), so their sum is the one-pass loss and gradient, with less padding
(BENCHMARKS.md, "Length groups"). The groups leave out the rows whose
gradient is exactly zero: rows with no sampled token, and, when the loss has
no KL or entropy term, rows whose advantage is 0 on every sampled token (a
prompt whose rollouts all got the same reward). The update is the same; it
runs fewer passes (BENCHMARKS.md, "Rows without gradient"). An SFT update
is one program jitted per shape, an RL update three: the policy gradient
(once per rollout width, or group shape), the memorization gradient (once
per its own width) and the optimizer step, which takes parameters and
optimizer state donated.
Log-probs and entropy are taken from the final hidden states
`LossConfig.logits_chunk` slots at a time, so no [B, T, V] logits buffer is
ever held (see losses.token_logprobs_from_hidden).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rsearch_jax import sharding as sharding_lib
from rsearch_jax.rl import _losses as losses
from rsearch_jax.sampling import TagGrammar

SCHEDULES = ("cosine", "constant")
# LossConfig.kl_kind: k1 folded into the reward, or k2 / k3 as a loss term.
LOSS_KL_KINDS = ("k1_reward", "k2", "k3")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with linear warmup then cosine (or constant) decay.

  Attributes:
    learning_rate: peak learning rate.
    warmup_steps: linear warmup from 0.
    total_steps: length of the schedule (cosine decays to `min_lr_ratio`).
    schedule: "cosine" or "constant" (after warmup).
    min_lr_ratio: final / peak learning rate for cosine.
    weight_decay, b1, b2, eps: AdamW.
    grad_clip: global-norm clipping (0: off).
  """

  learning_rate: float = 1e-6
  warmup_steps: int = 0
  total_steps: int = 1000
  schedule: str = "cosine"
  min_lr_ratio: float = 0.1
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  grad_clip: float = 1.0


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
  if cfg.schedule == "constant":
    after = optax.constant_schedule(cfg.learning_rate)
  elif cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(
        cfg.learning_rate, max(cfg.total_steps - cfg.warmup_steps, 1),
        alpha=cfg.min_lr_ratio)
  else:
    raise ValueError(f"optim.schedule={cfg.schedule!r}: expected one of "
                     f"{SCHEDULES}")
  if cfg.warmup_steps <= 0:
    return after
  warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  parts = []
  if cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  parts.append(optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2,
                           eps=cfg.eps, weight_decay=cfg.weight_decay))
  return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The RL objective.

  Attributes:
    clip_eps / clip_eps_high: PPO ratio clipping [1 - eps, 1 + eps_high].
    kl_coef: weight of the KL to the reference policy (0: no reference pass).
    kl_kind: "k1_reward" (folded into the per-token reward before the
      advantages; REINFORCE++), "k3" or "k2" (a loss term).
    entropy_coef: bonus on the policy's entropy over sampled tokens.
    aggregation: how token terms are averaged (see losses.policy_loss).
    temperature: the sampling temperature (log-probs are taken at it, so the
      ratio against the sampler's log-probs is 1 on the first update).
    mem_coef: weight mu of the memorization NLL (R1-Searcher++).
    mask_documents: False only for the ablation that trains on retrieved
      tokens too (loss mask = every non-prompt, non-padding token).
    logits_chunk: sequence slots whose [B, chunk, V] logits exist at once in
      the loss (forward and backward); 0 computes all T at once. Numerically
      the same either way; it trades memory for a second LM-head matmul in
      the backward pass.
    grammar: the sampler's tag grammar (set from the tokenizer, not a config
      field): the policy's log-probs are those of the constrained
      distribution the sampler drew from (rsearch_jax.sampling.TagGrammar).
  """

  clip_eps: float = 0.2
  clip_eps_high: float | None = None
  kl_coef: float = 0.0
  kl_kind: str = "k3"
  entropy_coef: float = 0.0
  aggregation: str = "token_mean"
  temperature: float = 1.0
  mem_coef: float = 0.0
  mask_documents: bool = True
  logits_chunk: int = 256
  grammar: TagGrammar | None = None

  def __post_init__(self):
    if self.kl_kind not in LOSS_KL_KINDS:
      raise ValueError(f"loss.kl_kind={self.kl_kind!r}: expected one of "
                       f"{LOSS_KL_KINDS}")
    if self.logits_chunk < 0:
      raise ValueError(f"loss.logits_chunk={self.logits_chunk}: expected >= 0 "
                       "(0: no chunking)")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RLBatch:
  """One RL update's rollouts. B rows, T slots (the sampler's layout).

  Attributes:
    tokens: [B, T] int32.
    positions: [B, T] int32, -1 on padding.
    loss_mask: [B, T] int32, 1 on the policy's sampled tokens.
    old_logprobs: [B, T] float32, the sampler's log-probs (0 off the mask).
    ref_logprobs: [B, T] float32, the reference policy's (0 when unused).
    advantages: [B, T] float32 per-token advantages.
  """

  tokens: jax.Array
  positions: jax.Array
  loss_mask: jax.Array
  old_logprobs: jax.Array
  ref_logprobs: jax.Array
  advantages: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NLLBatch:
  """Teacher-forced sequences for a next-token loss (SFT, memorization).

  Attributes:
    tokens: [B, T] int32.
    positions: [B, T] int32, -1 on padding.
    loss_mask: [B, T] int32, 1 on the target tokens (not prompt, documents,
      padding).
  """

  tokens: jax.Array
  positions: jax.Array
  loss_mask: jax.Array


def fitted_width(lengths: Sequence[int] | np.ndarray, max_len: int,
                 multiple: int) -> int:
  """Columns an update needs: the longest row rounded up to `multiple`, at
  most `max_len` (`multiple` 0: always `max_len`).

  The columns past every row's end are padding, which a causal model's loss
  never reads, so dropping them changes no number; rounding keeps the
  jitted update to a few shapes.
  """
  if multiple <= 0:
    return max_len
  longest = max([int(n) for n in lengths] + [1])
  return min(max_len, -(-longest // multiple) * multiple)


def rows_with_gradient(batch: RLBatch, loss: LossConfig) -> np.ndarray:
  """[B] bool: the rows whose policy-gradient terms can be nonzero.

  A row without a sampled token has none. With no KL and no entropy term in
  the loss (kl_coef 0, or KL folded into the advantages as "k1_reward";
  entropy_coef 0), neither has a row whose advantage is 0 on every sampled
  token: its clipped surrogate is 0 whatever the policy. That is every row of
  a prompt whose rollouts all got the same outcome reward under a group
  baseline. Their token-mean weight still counts (the update divides by all
  sampled tokens), only their zero gradient is not computed.
  """
  on = np.asarray(batch.loss_mask) > 0
  kl_term = loss.kl_coef != 0 and loss.kl_kind != "k1_reward"
  if loss.entropy_coef != 0 or kl_term:
    return on.any(1)
  return (on & (np.asarray(batch.advantages) != 0)).any(1)


def _token_logprobs(model, tokens, positions, temperature: float, chunk: int,
                    entropy_mask=None, grammar=None, sampled=None):
  """(logp [B, T], entropy [B, T] or None) of a teacher-forced pass; with a
  tag grammar, under the constraint the sampler applied to `sampled`."""
  # last_only: the decoder's own LM-head pass covers one slot; the loss runs
  # the head itself, chunk by chunk, on the hidden states.
  _, _, hidden = model(tokens, positions, return_hidden=True, last_only=True)
  return losses.token_logprobs_from_hidden(
      hidden, model.logits, tokens, temperature, chunk=chunk,
      entropy_mask=entropy_mask, grammar=grammar, sampled=sampled)


def rl_loss(model, batch: RLBatch, cfg: LossConfig,
            mem: NLLBatch | None = None, share: jax.Array | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The RL objective on one (micro-)batch, and its statistics.

  `share` [2]: this batch's share of a larger batch's sampled tokens and of
  its rows with a sampled token. Each token-mean term (and the policy loss,
  by its aggregation) is then weighed by it, so the terms of batches that
  partition a larger one add up to the larger batch's own. (The
  memorization term, `mem`, is not a share of anything: give it to one
  pass only, as Learner does.)
  """
  if mem is not None and share is not None:
    raise ValueError("rl_loss: `mem` with `share` would add the memorization "
                     "NLL once per share; give it to one pass")
  mask = batch.loss_mask
  tok_w = row_w = 1.0
  if share is not None:
    tok_w, row_w = share[0], share[1]
  pg_w = tok_w if cfg.aggregation == "token_mean" else row_w
  # The grammar's state moves on the loss mask's tokens: the sampled ones
  # (with mask_documents=False also the documents, which hold no leaf tag).
  logp, entropy = _token_logprobs(model, batch.tokens, batch.positions,
                                  cfg.temperature, cfg.logits_chunk, mask,
                                  cfg.grammar, mask)
  loss, stats = losses.policy_loss(
      logp, batch.old_logprobs, batch.advantages, mask,
      clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high,
      aggregation=cfg.aggregation)
  loss = pg_w * loss
  stats = {k: tok_w * v for k, v in stats.items()}
  stats["pg_loss"] = loss
  if cfg.kl_coef > 0:
    kl = losses.kl_penalty(logp, batch.ref_logprobs, mask,
                           kind="k1" if cfg.kl_kind == "k1_reward" else cfg.kl_kind)
    stats["kl"] = tok_w * losses.masked_mean(kl, mask)
    if cfg.kl_kind != "k1_reward":
      loss = loss + cfg.kl_coef * stats["kl"]
  stats["entropy"] = tok_w * losses.masked_mean(entropy, mask)
  if cfg.entropy_coef:
    loss = loss - cfg.entropy_coef * stats["entropy"]
  if mem is not None and cfg.mem_coef > 0:
    mem_logp, _ = _token_logprobs(model, mem.tokens, mem.positions, 1.0,
                                  cfg.logits_chunk)
    stats["mem_nll"] = losses.masked_nll_from_logprobs(mem_logp, mem.loss_mask)
    loss = loss + cfg.mem_coef * stats["mem_nll"]
  stats["loss"] = loss
  return loss, stats


def nll_loss(model, batch: NLLBatch, logits_chunk: int = 256
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Next-token NLL over the masked targets (SFT cold start, pretraining)."""
  logp, _ = _token_logprobs(model, batch.tokens, batch.positions, 1.0,
                            logits_chunk)
  loss = losses.masked_nll_from_logprobs(logp, batch.loss_mask)
  return loss, {"loss": loss, "tokens": batch.loss_mask.sum()}


def _split_micro(tree, n: int):
  """[B, ...] leaves -> [n, B / n, ...]."""
  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into "
                       f"{n} micro-batches")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])
  return jax.tree.map(split, tree)


class Learner:
  """Parameters and optimizer state of the policy, and the jitted updates.

  Args:
    model: the policy (a Decoder; sharded already when `mesh` is given).
    optim: optimizer settings.
    loss: RL objective settings.
    micro_batches: gradient accumulation steps per update.
    length_groups: an RL update's rows sorted by length and split into this
      many groups, each a pass as wide as its own longest row rounded up to
      `fit_multiple` (the same update as one pass, with less padding; needs
      micro_batches=1).
    skip_zero_gradient: with length_groups > 1, leave out the rows
      `rows_with_gradient` rules out: the groups hold only the others (the
      last one filled up with the shortest rows left out), so fewer of them
      run. The same update; the statistics entropy, clip_frac, approx_kl,
      ratio_mean and kl are then over the rows run.
    fit_multiple: the groups' width rounding (fitted_width).
    mesh, rules: shard parameters, optimizer state and batches.
  """

  def __init__(self, model, optim: OptimConfig, loss: LossConfig, *,
               micro_batches: int = 1, length_groups: int = 1,
               skip_zero_gradient: bool = True,
               fit_multiple: int = 64, mesh=None,
               rules=sharding_lib.DEFAULT_RULES):
    if length_groups < 1:
      raise ValueError(f"rl.length_groups={length_groups}: expected >= 1")
    if length_groups > 1 and micro_batches > 1:
      raise ValueError(f"rl.length_groups={length_groups} needs "
                       f"rl.micro_batches=1 (got {micro_batches}): a "
                       "micro-batch's loss is its own mean, a group's a share "
                       "of the batch's")
    self.graphdef, params = nnx.split(model)
    self.optim_cfg, self.loss_cfg = optim, loss
    self.micro_batches = micro_batches
    self.length_groups, self.fit_multiple = length_groups, fit_multiple
    self.skip_zero_gradient = skip_zero_gradient
    self.last_passes = 0  # policy-gradient passes of the last RL update
    self.mesh, self.rules = mesh, rules
    self._batch_shards = 1
    self.tx = make_optimizer(optim)
    if mesh is not None:
      self.param_shardings = sharding_lib.state_shardings(params, mesh, rules)
      params = jax.device_put(params, self.param_shardings)
      batch_axes = tuple(a for a in rules["batch"]
                         if a in mesh.shape and mesh.shape[a] > 1)
      self.batch_sharding = NamedSharding(mesh, PartitionSpec(batch_axes or None))
      self._batch_shards = int(np.prod([mesh.shape[a] for a in batch_axes]))
      opt_shapes = jax.eval_shape(self.tx.init, params)
      self.opt_shardings = _opt_shardings(opt_shapes, self.param_shardings, mesh)
      self.opt_state = jax.jit(self.tx.init, out_shardings=self.opt_shardings)(params)
    else:
      self.param_shardings = self.opt_shardings = self.batch_sharding = None
      self.opt_state = self.tx.init(params)
    self.params = params
    self.step = 0
    # The policy gradient and the memorization gradient compile apart: their
    # batches change width independently from step to step, so one program
    # per (rollout width, memorization width) pair would compile far more
    # often (BENCHMARKS.md, "The demo's RL step").
    self._rl_grads = self._compile_grads(self._rl_grads_fn)
    self._mem_grads = self._compile_grads(self._mem_grads_fn)
    self._rl_apply = self._compile(self._rl_apply_fn)
    self._add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b),
                        donate_argnums=0)
    self._sft = self._compile(self._sft_update)
    self._logp = jax.jit(self._logprobs, static_argnames=("temperature",))

  # -- public ---------------------------------------------------------------

  @property
  def model(self):
    """The policy with the current parameters (shares their buffers)."""
    return nnx.merge(self.graphdef, self.params)

  def rl_step(self, batch: RLBatch, mem: NLLBatch | None = None) -> dict[str, float]:
    """One update on `batch` (+ mem_coef x the memorization NLL on `mem`)."""
    with self._ctx():
      if self.length_groups > 1:
        grads, stats = self._grouped_rl_grads(batch)
      else:
        grads, stats = self._rl_grads(self.params, self._put(batch))
      mem_grads = mem_stats = None
      if mem is not None and self.loss_cfg.mem_coef > 0:
        mem_grads, mem_stats = self._mem_grads(self.params, self._put(mem))
      self.params, self.opt_state, stats = self._rl_apply(
          self.params, self.opt_state, grads, stats, mem_grads, mem_stats)
    self.step += 1
    return {k: float(v) for k, v in stats.items()}

  def sft_step(self, batch: NLLBatch) -> dict[str, float]:
    with self._ctx():
      self.params, self.opt_state, stats = self._sft(
          self.params, self.opt_state, self._put(batch), None)
    self.step += 1
    return {k: float(v) for k, v in stats.items()}

  def logprobs(self, tokens, positions, temperature: float = 1.0,
               params=None, sampled=None) -> jax.Array:
    """[B, T] log-probs of each token given those before it (0 at slot 0);
    with the loss's tag grammar and `sampled` [B, T], under its constraint."""
    if sampled is None:
      if self.loss_cfg.grammar is not None:
        raise ValueError("Learner.logprobs: the loss has a tag grammar, so "
                         "`sampled` (the sampled-token mask) is needed")
      sampled = np.zeros(np.shape(tokens), np.int32)
    with self._ctx():
      return self._logp(self.params if params is None else params,
                        self._put(jnp.asarray(tokens)),
                        self._put(jnp.asarray(positions)),
                        self._put(jnp.asarray(sampled)), temperature=temperature)

  def learning_rate(self) -> float:
    return float(make_schedule(self.optim_cfg)(self.step))

  # -- internals -------------------------------------------------------------

  def _ctx(self):
    return (sharding_lib.use_mesh(self.mesh, self.rules)
            if self.mesh is not None else contextlib.nullcontext())

  def _put(self, tree):
    if tree is None or self.batch_sharding is None:
      return tree
    return jax.device_put(tree, self.batch_sharding)

  def _compile(self, fn):
    kw = {}
    if self.mesh is not None:
      kw = dict(out_shardings=(self.param_shardings, self.opt_shardings, None))
    return jax.jit(fn, donate_argnums=(0, 1), **kw)

  def _logprobs(self, params, tokens, positions, sampled, temperature):
    model = nnx.merge(self.graphdef, params)
    logp, _ = _token_logprobs(model, tokens, positions, temperature,
                              self.loss_cfg.logits_chunk, None,
                              self.loss_cfg.grammar, sampled)
    return logp

  def _accumulate(self, loss_fn, params, batch, extra):
    """Mean gradient and statistics over micro-batches (lax.scan)."""
    def grads_of(p, b, e):
      def f(p_):
        return loss_fn(nnx.merge(self.graphdef, p_), b, e)
      (_, stats), g = jax.value_and_grad(f, has_aux=True)(p)
      return g, stats

    n = self.micro_batches
    if n == 1:
      return grads_of(params, batch, extra)
    micro = _split_micro((batch, extra), n)

    def body(acc, mb):
      g, stats = grads_of(params, *mb)
      acc = jax.tree.map(lambda a, x: a + x / n, acc, g)
      return acc, stats

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, stats = jax.lax.scan(body, zeros, micro)
    return grads, jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)

  def _apply(self, params, opt_state, grads, stats):
    updates, opt_state = self.tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    stats = dict(stats)
    stats["grad_norm"] = optax.global_norm(grads)
    return params, opt_state, stats

  def _compile_grads(self, fn):
    kw = {}
    if self.mesh is not None:
      kw = dict(out_shardings=(self.param_shardings, None))
    return jax.jit(fn, **kw)

  def _rl_grads_fn(self, params, batch, share=None):
    loss_fn = lambda m, b, e: rl_loss(m, b, self.loss_cfg, share=e)
    return self._accumulate(loss_fn, params, batch, share)

  def _grouped_rl_grads(self, batch: RLBatch):
    """The policy gradient and statistics of `batch`, summed over its length
    groups (rows sorted by length; each group cut to its fitted width and
    weighed by its share of the sampled tokens / rows)."""
    host = jax.tree.map(np.asarray, batch)
    rows, width = host.tokens.shape
    k = self.length_groups
    size = rows // k
    if rows % k or size % self._batch_shards:
      raise ValueError(f"rl.length_groups={k}: {rows} rows do not split into "
                       f"{k} groups of a multiple of {self._batch_shards} rows "
                       "(the devices the batch is split over)")
    # Slots up to the last real token (prompts are left-padded).
    real = host.positions >= 0
    lengths = np.where(real.any(1), width - np.argmax(real[:, ::-1], axis=1), 0)
    on = host.loss_mask > 0
    totals = np.array([on.sum(), on.any(1).sum()], np.float64)
    order = np.argsort(lengths, kind="stable")
    passes = k
    if self.skip_zero_gradient:
      # The rows with gradient first (by length), then the others (by
      # length): the last pass is filled up with the shortest of those.
      live = rows_with_gradient(host, self.loss_cfg)[order]
      order = np.concatenate([order[live], order[~live]])
      passes = max(1, -(-int(live.sum()) // size))
    grads = stats = None
    run = 0.0
    for idx in np.split(order[:passes * size], passes):
      w = fitted_width(lengths[idx], width, self.fit_multiple)
      part = jax.tree.map(lambda x: x[idx, :w] if x.ndim == 2 else x[idx], host)
      counts = np.array([on[idx].sum(), on[idx].any(1).sum()], np.float64)
      share = (counts / np.maximum(totals, 1)).astype(np.float32)
      run += float(share[0])
      g, s = self._rl_grads(self.params, self._put(part), share)
      grads, stats = (g, s) if grads is None else self._add((grads, stats), (g, s))
    self.last_passes = passes
    if passes < k and run > 0:
      # The token-mean statistics over the rows run, not over all the rows
      # (the loss itself is whole: the rows left out add exactly 0 to it).
      stats = {n: v if n in ("loss", "pg_loss") else v / run
               for n, v in stats.items()}
    return grads, stats

  def _mem_grads_fn(self, params, mem):
    coef, chunk = self.loss_cfg.mem_coef, self.loss_cfg.logits_chunk

    def loss_fn(m, b, e):
      nll, _ = nll_loss(m, b, chunk)
      return coef * nll, {"mem_nll": nll}

    return self._accumulate(loss_fn, params, mem, None)

  def _rl_apply_fn(self, params, opt_state, grads, stats, mem_grads, mem_stats):
    """The optimizer step on the policy gradient plus the memorization's
    (the same sum `rl_loss` differentiates with `mem` given)."""
    stats = dict(stats)
    if mem_grads is not None:
      grads = jax.tree.map(jnp.add, grads, mem_grads)
      stats["mem_nll"] = mem_stats["mem_nll"]
      stats["loss"] = stats["loss"] + self.loss_cfg.mem_coef * stats["mem_nll"]
    return self._apply(params, opt_state, grads, stats)

  def _sft_update(self, params, opt_state, batch, _):
    loss_fn = lambda m, b, e: nll_loss(m, b, self.loss_cfg.logits_chunk)
    grads, stats = self._accumulate(loss_fn, params, batch, None)
    return self._apply(params, opt_state, grads, stats)


def _opt_shardings(opt_shapes: Any, param_shardings: Any, mesh):
  """Optimizer-state shardings: moments like their parameters, scalars
  (step counts) replicated."""
  flat_params = {
      tuple(path): s for path, s in
      jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
  replicated = NamedSharding(mesh, PartitionSpec())

  def one(path, leaf):
    # An optimizer-state leaf's path ends with the parameter's path.
    for n in range(len(path), 0, -1):
      s = flat_params.get(tuple(path[-n:]))
      if s is not None and len(s.spec) <= leaf.ndim:
        return s
    return replicated

  return jax.tree_util.tree_map_with_path(one, opt_shapes)
