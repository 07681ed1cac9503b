"""The curriculum: stages of pretraining, SFT and RL, run one after another.

Main entry points:
  Stage                       one stage's settings (kind, steps, data, rewards,
                              learning rate, batch).
  RLSettings                  group size, advantages, the loss, memorization.
  Trainer(...).run()          runs every stage, with checkpoints, metrics, a
                              progress bar, traces, evaluation after each stage
                              and, at the end, curves (PNG) and a summary table.

One RL step:
  prompts (G rollouts each) -> Sampler (retrieval in the loop) -> rewards
  (rewards.score_group per prompt group) -> per-token advantages -> Learner
  update (policy loss + KL, masked to the policy's tokens; + memorization NLL).

Determinism: the sampler's seed at each step is derived from (seed, global
step), batches come from seeded iterators whose position is checkpointed, so a
run resumed from a checkpoint continues exactly as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsearch_jax import checkpoint as ckpt_lib
from rsearch_jax import metrics as metrics_lib
from rsearch_jax import rewards as rewards_lib
from rsearch_jax.data._qa import PromptIterator
from rsearch_jax.prompts import MethodTags
from rsearch_jax.rl import _memorization as mem_lib
from rsearch_jax.rl import _rollouts as rollouts
from rsearch_jax.rl._train_step import (Learner, LossConfig, OptimConfig,
                                        rows_with_gradient)

STAGE_KINDS = ("pretrain", "sft", "rl")
MEMORIZATIONS = ("none", "rule", "policy")  # RLSettings.memorization
# A memorization batch's rows come in multiples of this (per mini-batch).
MEM_ROWS = 16
# The end-of-run table: overall, then by knowledge source and by hops.
# "knows/*": facts recalled without documents (synthetic runs).
SUMMARY_COLUMNS = ("reward", "em", "f1", "retrievals", "em/internal", "retrievals/internal",
                   "em/corpus", "retrievals/corpus", "em/1hop", "em/2hop",
                   "em/chained", "em/comparison", "answered", "knows/internal", "knows/corpus", "n")

# eval_curves.png (with eval_every), where a run has them.
EVAL_CURVE_KEYS = ("em", "em/1hop", "em/2hop", "retrievals",
                   "retrievals/internal", "reward")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of the curriculum.

  Attributes:
    name: unique, shown in logs and plots ("sft", "rl_stage1", ...).
    kind: "pretrain" (next-token loss on texts), "sft" (loss on the policy's
      tokens of scripted trajectories) or "rl".
    steps: updates in this stage.
    data: key of the dataset this stage draws from (Trainer.datasets).
    batch_size: sequences per update (pretrain / sft) or prompts per update
      (rl; each sampled group_size times).
    rewards: reward names (rsearch_jax.rewards registry), rl only.
    learning_rate, warmup_steps: the stage's optimizer (a new AdamW each
      stage, as the papers train their stages as separate runs).
  """

  name: str
  kind: str
  steps: int
  data: str
  batch_size: int
  rewards: tuple[str, ...] = ()
  learning_rate: float = 1e-6
  warmup_steps: int = 0

  def __post_init__(self):
    if self.kind not in STAGE_KINDS:
      raise ValueError(f"stage {self.name!r}: kind={self.kind!r}, expected one "
                       f"of {STAGE_KINDS}")
    if self.kind == "rl" and not self.rewards:
      raise ValueError(f"stage {self.name!r}: an rl stage needs rewards")


@dataclasses.dataclass(frozen=True)
class RLSettings:
  """Settings shared by the RL stages.

  Attributes:
    group_size: rollouts per prompt.
    advantage: "reinforce_pp", "group_norm" or "grpo".
    whiten: normalise advantages over the batch's sampled tokens.
    loss: the objective (clipping, KL, entropy, mu, the document mask).
    micro_batches: gradient accumulation per update.
    length_groups: each RL update's rows sorted by length and split into
      this many passes, each as wide as its own rows (the same update with
      less padding; Learner).
    skip_zero_gradient: those passes leave out the rows whose gradient is
      exactly 0 (Learner; the same update in fewer passes).
    mini_batches: optimizer updates per RL step, each on 1/mini_batches of
      the step's rollouts (OpenRLHF's train_batch_size < rollout batch).
    epochs: passes over the step's rollouts (PPO epochs). With more than
      one update per step, the later updates' policy differs from the
      sampler's, which the clipped ratio then bounds.
    memorization: "none", "rule" (rewrite_rule_based) or "policy".
    fit_multiple: an update's batches (RL, SFT and pretraining alike) are as
      wide as their longest row, rounded up to this multiple (few compiled
      shapes); 0 keeps them at the sampler's max_len, or data.seq_len for
      SFT and pretraining (one shape, e.g. where compiling is slow).
  """

  group_size: int = 4
  advantage: str = "reinforce_pp"
  whiten: bool = False
  loss: LossConfig = LossConfig()
  micro_batches: int = 1
  length_groups: int = 1
  skip_zero_gradient: bool = True
  mini_batches: int = 1
  epochs: int = 1
  memorization: str = "none"
  fit_multiple: int = 64


@dataclasses.dataclass
class Trainer:
  """Runs a curriculum.

  Attributes:
    model: the policy (sharded when `mesh` is set).
    tokenizer: its tokenizer.
    make_sampler: model -> Sampler (retrieval in the loop).
    tags: the method's query / document tags.
    answer_tags: ("<answer>", "</answer>") by default.
    reward_tags: the rewards module's TagSet for the method.
    stages: the curriculum.
    datasets: name -> list of items: for "pretrain" stages strings; for "sft"
      (prompt, segments) pairs; for "rl" objects with `.question` and
      `.answers`.
    prompt_fn: question text -> prompt text.
    rl: RL settings.
    optim: every stage's AdamW but its learning rate, warmup and length,
      which are the stage's own.
    workdir: checkpoints, metrics.jsonl, TensorBoard, traces, plots.
    eval_fn: optional, (trainer, stage name) -> dict of metrics, run after
      each stage and before the first.
    eval_every: also evaluate every this many steps within a stage, as the
      row "NAME@STEP" (the stage's step; 0: only at the stages' ends); the
      run then also plots every evaluation against the step (eval_curves.png).
    seq_len: sequence length of pretrain / sft batches.
    seed: the run's seed.
    mesh: device mesh (None: one device).
    checkpoint_every: steps between checkpoints (and at each stage's end).
    trace_every: steps between logged sample traces.
    config: the run's config as a JSON-able dict (experiment.build_trainer
      passes it), stored with each checkpoint; a resume under a config that
      differs in any field but `log.*` and `workdir` is refused (None: no
      check).
    allow_config_changes: resume anyway, warning with the differing fields
      (branching a run on purpose).
    sft_sort_window: SFT batches come from windows of this many batches
      sorted by length (PromptIterator's sort_window; 0: plain shuffle).
  """

  model: Any
  tokenizer: Any
  make_sampler: Callable[[Any], Any]
  tags: MethodTags
  reward_tags: Any
  stages: Sequence[Stage]
  datasets: dict[str, Sequence[Any]]
  prompt_fn: Callable[[str], str]
  rl: RLSettings
  workdir: str
  optim: OptimConfig = OptimConfig()
  eval_fn: Callable[["Trainer", str], dict[str, float]] | None = None
  eval_every: int = 0
  seq_len: int = 256
  seed: int = 0
  mesh: Any = None
  checkpoint_every: int = 50
  trace_every: int = 10
  tensorboard: bool = True
  config: dict[str, Any] | None = None
  allow_config_changes: bool = False
  sft_sort_window: int = 0

  def __post_init__(self):
    names = [s.name for s in self.stages]
    if len(set(names)) != len(names):
      raise ValueError(f"stage names must be unique: {names}")
    if self.eval_every < 0:
      raise ValueError(f"eval_every={self.eval_every}: expected >= 0 "
                       "(0: evaluate only at the stages' ends)")
    for s in self.stages:
      if s.data not in self.datasets:
        raise ValueError(f"stage {s.name!r}: data={s.data!r} is not one of "
                         f"{sorted(self.datasets)}")
      if s.kind == "rl":
        for r in s.rewards:
          rewards_lib.get_reward(r)  # unknown names fail before any work
    self.workdir = pathlib.Path(self.workdir)
    self.history: list[dict[str, Any]] = []
    self.eval_rows: list[dict[str, Any]] = []
    self._learner: Learner | None = None
    self._ref_params = None
    self._plain_sampler = None  # memorization='policy'

  # -- the run ----------------------------------------------------------------

  def run(self) -> list[dict[str, Any]]:
    """Runs (or resumes) the curriculum; returns the evaluation rows."""
    self.workdir.mkdir(parents=True, exist_ok=True)
    # Each stage's last step is kept, to evaluate or branch a run from.
    ends = np.cumsum([s.steps for s in self.stages]).tolist()
    ckpt = ckpt_lib.Checkpointer(self.workdir / "checkpoints", keep_steps=ends)
    start_stage, start_step, positions = 0, 0, {}
    resume = ckpt.latest_step()
    if resume is not None:
      start_stage, start_step, positions = self._restore(ckpt, resume)
    writer = metrics_lib.MetricsWriter(self.workdir, tensorboard=self.tensorboard,
                                       resume_step=resume)
    global_step = resume or 0
    if resume is None and self.eval_fn is not None:
      self._evaluate("start", writer, global_step)
    if resume is not None and start_step == 0 and start_stage > 0:
      # Resumed at a stage's end from a checkpoint written without the
      # stage's evaluation (before that was saved with it): evaluate now.
      self._evaluate_missing(self.stages[start_stage - 1].name, writer,
                             global_step)
    for si in range(start_stage, len(self.stages)):
      stage = self.stages[si]
      first = start_step if si == start_stage else 0
      if self._learner is None or first == 0:
        self._new_stage(stage, keep=(si == start_stage and first > 0))
      iterator = self._iterator(stage, si)
      if stage.name in positions:
        iterator.restore(positions[stage.name])
      bar = metrics_lib.progress(stage.steps, desc=stage.name)
      bar.update(first)
      for step in range(first, stage.steps):
        global_step += 1
        t0 = time.perf_counter()
        if stage.kind == "rl":
          m = self._rl_step(stage, iterator.next(), global_step, writer)
        else:
          m = self._nll_step(stage, iterator.next())
        m["seconds"] = time.perf_counter() - t0
        m["lr"] = self._learner.learning_rate()
        writer.write(global_step, m, stage=stage.name)
        self.history.append(dict(m, step=global_step, stage=stage.name))
        bar.update(1)
        bar.set_postfix({k: f"{m[k]:.3g}" for k in ("reward", "loss") if k in m})
        last = step + 1 == stage.steps
        if last:
          # Evaluated before the stage's last checkpoint, which then holds
          # the row: a run resumed or branched there keeps it.
          self._evaluate_missing(stage.name, writer, global_step)
        elif self.eval_every and (step + 1) % self.eval_every == 0:
          self._evaluate_missing(f"{stage.name}@{step + 1}", writer,
                                 global_step)
        if last or global_step % self.checkpoint_every == 0:
          positions[stage.name] = iterator.state()
          self._save(ckpt, global_step, si, step + 1, positions)
      bar.close()
      self._evaluate_missing(stage.name, writer, global_step)
    ckpt.close()
    self._finish(writer)
    return self.eval_rows

  # -- stages -------------------------------------------------------------------

  def _iterator(self, stage: Stage, index: int) -> PromptIterator:
    """The stage's batches; an SFT stage's in length buckets of
    `sft_sort_window` batches (its examples' lengths differ widely)."""
    data = self.datasets[stage.data]
    if stage.kind != "sft" or not self.sft_sort_window:
      return PromptIterator(data, stage.batch_size, seed=self.seed + index)
    lengths = [len(rollouts.encode_example(self.tokenizer, p, segs)[0])
               for p, segs in data]
    return PromptIterator(data, stage.batch_size, seed=self.seed + index,
                          lengths=lengths, sort_window=self.sft_sort_window)

  def _new_stage(self, stage: Stage, keep: bool = False):
    """A fresh optimizer for the stage (parameters carry over)."""
    # An RL step makes mini_batches x epochs optimizer updates; warmup and
    # the schedule count updates.
    updates = (self.rl.mini_batches * self.rl.epochs
               if stage.kind == "rl" else 1)
    optim = dataclasses.replace(self.optim, learning_rate=stage.learning_rate,
                                warmup_steps=stage.warmup_steps * updates,
                                total_steps=stage.steps * updates)
    model = self.model if self._learner is None else self._learner.model
    # Pretraining and SFT: the NLL alone, its logits as chunked as RL's.
    loss = self.rl.loss if stage.kind == "rl" else LossConfig(
        logits_chunk=self.rl.loss.logits_chunk)
    rl = stage.kind == "rl"
    learner = Learner(model, optim, loss,
                      micro_batches=self.rl.micro_batches if rl else 1,
                      length_groups=self.rl.length_groups if rl else 1,
                      skip_zero_gradient=self.rl.skip_zero_gradient,
                      fit_multiple=self.rl.fit_multiple, mesh=self.mesh)
    if keep and self._learner is not None:
      learner.opt_state, learner.step = self._learner.opt_state, self._learner.step
    self._learner = learner
    if stage.kind == "rl" and self.rl.loss.kl_coef > 0 and not keep:
      self._ref_params = jax.tree.map(jnp.copy, learner.params)

  def _nll_step(self, stage: Stage, items) -> dict[str, float]:
    if stage.kind == "pretrain":
      examples = rollouts.text_examples(self.tokenizer, items)
    else:
      examples = list(items)
    # As wide as the batch's longest row (rounded): padding columns change
    # no number, and a short-row stage (SFT, copy warm-up) runs faster.
    batch = rollouts.nll_batch(self.tokenizer, examples, self.seq_len,
                               rows=stage.batch_size,
                               fit_multiple=self.rl.fit_multiple)
    return self._learner.sft_step(batch)

  def _rl_step(self, stage: Stage, items, global_step: int, writer) -> dict[str, float]:
    g = self.rl.group_size
    learner = self._learner
    sampler = self.make_sampler(learner.model)
    prompts = [self.prompt_fn(it.question) for it in items for _ in range(g)]
    # A question may name the corpus its searches read (synthetic: a renamed
    # copy of the world); "" is the retriever's default. Only then is the
    # sampler asked to route (a sampler of one corpus needs no `corpora`).
    corpora = [getattr(it, "corpus", "") for it in items for _ in range(g)]
    routed = {"corpora": corpora} if any(corpora) else {}
    t0 = time.perf_counter()
    out = sampler(prompts, seed=int(self.seed * 1_000_003 + global_step),
                  **routed)
    sample_seconds = time.perf_counter() - t0
    segs = [out.segments(i, self.tokenizer) for i in range(len(prompts))]
    totals, parts, correct = [], {}, []
    for j, it in enumerate(items):
      group = segs[j * g:(j + 1) * g]
      total, part = rewards_lib.score_group(group, list(it.answers),
                                            self.reward_tags, stage.rewards)
      totals += list(total)
      for k, v in part.items():
        parts.setdefault(k, []).extend(v)
      correct += [rewards_lib.is_correct(rewards_lib.parse_trace(s, self.reward_tags),
                                         list(it.answers)) for s in group]
    rewards = np.asarray(totals, np.float32)
    loss_cfg = self.rl.loss
    max_len = out.tokens.shape[1]
    # Each batch as wide as its own longest row: the memorization rows
    # (rewrites, without documents) are much shorter than the rollouts, and
    # at the rollouts' width they cost as much as the rollouts
    # (BENCHMARKS.md, "The demo's RL step"). And only as many rows as the
    # rewrites, rounded up to MEM_ROWS per update (a step rewrites a few
    # rollouts of dozens); none without a rewrite: its NLL term is 0.
    mem, n_mem = None, 0
    if loss_cfg.mem_coef > 0 and self.rl.memorization != "none":
      mem_examples = mem_lib.memorization_examples(
          prompts, segs, correct, out.num_searches, self._rewriter(sampler))
      n_mem = len(mem_examples)
      if n_mem:
        mem = rollouts.nll_batch(
            self.tokenizer, [(p, [(c, False)]) for p, c in mem_examples],
            max_len, rows=self._mem_rows(n_mem, len(prompts)),
            fit_multiple=self.rl.fit_multiple)
    out = rollouts.fit_to_rollouts(out, self.rl.fit_multiple)
    mask = rollouts.training_mask(out, loss_cfg.mask_documents)
    if loss_cfg.mask_documents:
      old = out.logprobs
    else:  # the ablation: score every completion token with the policy
      old = np.asarray(learner.logprobs(out.tokens, out.positions,
                                        loss_cfg.temperature, sampled=mask))
    ref = None
    if loss_cfg.kl_coef > 0:
      ref = np.asarray(learner.logprobs(out.tokens, out.positions,
                                        loss_cfg.temperature,
                                        params=self._ref_params, sampled=mask))
    adv = rollouts.token_advantages(
        rewards, mask, group_size=g, method=self.rl.advantage, logprobs=old,
        ref_logprobs=ref, kl_coef=loss_cfg.kl_coef,
        fold_kl=loss_cfg.kl_kind == "k1_reward", whiten=self.rl.whiten)
    batch = rollouts.rl_batch(out, adv, mask, old, ref)
    t1 = time.perf_counter()
    stats = self._updates(batch, mem)
    update_seconds = time.perf_counter() - t1
    sampled = out.loss_mask.sum(axis=1)
    m = dict(stats)
    # The rollouts the update can learn from (the others' advantage is 0).
    m["grad_rows"] = float(rows_with_gradient(batch, loss_cfg).mean())
    m.update(
        reward=float(rewards.mean()),
        accuracy=float(np.mean(correct)),
        retrievals=float(out.num_searches.mean()),
        response_tokens=float(sampled.mean()),
        tokens_per_s=float(out.loss_mask.sum() / max(sample_seconds, 1e-9)),
        sample_seconds=sample_seconds,
        update_seconds=update_seconds,
        memorized=float(n_mem))
    for k, v in parts.items():
      m[f"reward_{k}"] = float(np.mean(v))
    if global_step % self.trace_every == 0:
      writer.write_text(global_step, "trace",
                        f"prompt: {items[0].question}\ngold: {list(items[0].answers)}\n"
                        f"reward: {totals[0]:.3f}\n" + out.texts[0])
    return m

  def _updates(self, batch, mem) -> dict[str, float]:
    """mini_batches x epochs updates on one step's rollouts; the statistics
    are their means. Mini-batch j holds the j-th contiguous slice of the
    rollouts (whole prompt groups when the counts divide) and every
    mini_batches-th memorization row from row j, so the rewrites, packed
    first, are spread over the mini-batches."""
    n = self.rl.mini_batches
    rows = batch.tokens.shape[0]
    if rows % n:
      raise ValueError(f"{rows} rollouts do not split into rl.mini_batches={n}")
    size = rows // n
    parts = [(jax.tree.map(lambda x: x[j * size:(j + 1) * size], batch),
              None if mem is None else jax.tree.map(lambda x: x[j::n], mem))
             for j in range(n)]
    stats: dict[str, list[float]] = {}
    for _ in range(self.rl.epochs):
      for b, m in parts:
        for k, v in self._learner.rl_step(b, m).items():
          stats.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in stats.items()}

  def _mem_rows(self, n_mem: int, n_rollouts: int) -> int:
    """Rows of a step's memorization batch: n_mem rounded up to MEM_ROWS
    per mini-batch (few distinct shapes to compile), at most the rollouts'
    count. With micro-batches, as many as the rollouts: each micro-batch's
    NLL is its own masked mean, so fewer rows would weigh the rewrites
    differently."""
    if self.rl.micro_batches > 1:
      return n_rollouts
    # The rounding of a batch's width, applied to its rows.
    return rollouts.fitted_width([n_mem], n_rollouts,
                                 MEM_ROWS * self.rl.mini_batches)

  def _rewriter(self, sampler):
    if self.rl.memorization == "rule":
      return lambda segs: mem_lib.rewrite_rule_based(segs, self.tags)
    if self.rl.memorization == "policy":
      from rsearch_jax.sampling import Sampler, SamplingConfig
      cfg = sampler.config
      # One plain sampler per run (its loop compiles once), given the
      # current weights at each step.
      if self._plain_sampler is None:
        self._plain_sampler = Sampler(sampler.model, sampler.tokenizer,
                                      SamplingConfig(
            max_prompt_len=cfg.max_len - 48, max_len=cfg.max_len,
            max_new_tokens=48, temperature=0.0))
      plain = self._plain_sampler
      plain.model = sampler.model
      rewriter = mem_lib.PolicyRewriter(lambda texts: plain(texts).texts)
      return lambda segs: rewriter(segs, self.tags)
    raise ValueError(f"rl.memorization={self.rl.memorization!r}: expected "
                     f"one of {MEMORIZATIONS}")

  # -- evaluation, checkpoints, the end ------------------------------------------

  def _evaluate(self, after: str, writer, global_step: int):
    m = self.eval_fn(self, after)
    writer.write(global_step, {f"eval/{k}": v for k, v in m.items()
                               if isinstance(v, (int, float))}, stage=after)
    self.eval_rows.append(dict(m, after=after, step=global_step))

  def _evaluate_missing(self, after: str, writer, global_step: int):
    if self.eval_fn is not None and not any(
        r.get("after") == after for r in self.eval_rows):
      self._evaluate(after, writer, global_step)

  @property
  def learner(self) -> Learner:
    return self._learner

  def current_model(self):
    return self.model if self._learner is None else self._learner.model

  def _save(self, ckpt, global_step, stage_index, stage_step, positions):
    meta = dict(stage_index=stage_index, stage_step=stage_step,
                stage_name=self.stages[stage_index].name,
                positions=positions, history=self.history,
                eval_rows=self.eval_rows, learner_step=self._learner.step,
                config=self.config)
    ckpt.save(global_step, params=self._learner.params,
              opt_state=self._learner.opt_state, ref_params=self._ref_params,
              meta=meta)

  def _restore(self, ckpt, step):
    meta = ckpt.read_meta(step)
    self._check_resumable(ckpt, step, meta)
    si, stage_step = meta["stage_index"], meta["stage_step"]
    stage = self.stages[si]
    if stage_step >= stage.steps:  # saved at a stage's end: start the next
      si, stage_step = si + 1, 0
      stage = self.stages[min(si, len(self.stages) - 1)]
    self._new_stage(stage)
    ref_like = self._learner.params if (
        stage.kind == "rl" and self.rl.loss.kl_coef > 0) else None
    params, opt_state, ref, meta = ckpt.restore(
        step, params_like=self._learner.params,
        opt_state_like=self._learner.opt_state, ref_params_like=ref_like)
    self._learner.params = params
    if stage_step > 0:
      self._learner.opt_state = opt_state
      self._learner.step = meta["learner_step"]
      self._ref_params = ref
    elif ref_like is not None:
      self._ref_params = jax.tree.map(jnp.copy, params)
    self.history = list(meta["history"])
    self.eval_rows = list(meta["eval_rows"])
    return si, stage_step, dict(meta["positions"])

  def _check_resumable(self, ckpt, step: int, meta: dict) -> None:
    """Refuses (CheckpointError) a checkpoint written under another config or
    at a stage this curriculum does not have at the same place."""
    where = f"checkpoint {ckpt.directory} step {step}"
    stored = meta.get("config")
    if self.config is not None and stored is not None:
      changes = config_changes(stored, self.config)
      if changes and not self.allow_config_changes:
        raise ckpt_lib.CheckpointError(
            f"{where} was written under a different config: "
            f"{'; '.join(changes)}. Resume with the config it was written "
            "with, or use a new workdir; to branch from it on purpose, set "
            "--config.log.allow_config_changes=True")
      if changes:
        warnings.warn(f"{where}: resuming under a changed config "
                      f"(log.allow_config_changes): {'; '.join(changes)}",
                      stacklevel=2)
    si, name = meta["stage_index"], meta.get("stage_name")
    names = [s.name for s in self.stages]
    shown = f"stage {name!r}" if name else f"stage index {si}"
    if si >= len(names):
      raise ckpt_lib.CheckpointError(
          f"{where} was saved in {shown} (stage {si + 1} of its curriculum), "
          f"but this curriculum has {len(names)} stage(s): {', '.join(names)}")
    if name is not None and name != names[si]:
      raise ckpt_lib.CheckpointError(
          f"{where} was saved in stage {name!r}, but stage {si + 1} of this "
          f"curriculum is {names[si]!r} (curriculum: {', '.join(names)})")

  def _finish(self, writer):
    writer.close()
    keys = [k for k in ("reward", "accuracy", "retrievals", "loss", "kl",
                        "entropy", "response_tokens")
            if any(k in h for h in self.history)]
    if self.history:
      metrics_lib.plot_curves(self.history, self.workdir / "curves.png", keys=keys)
    if self.eval_rows:
      cols = ["after"] + [k for k in SUMMARY_COLUMNS if k in self.eval_rows[0]]
      table = metrics_lib.summary_table(self.eval_rows, cols)
      (self.workdir / "summary.md").write_text(table + "\n")
      metrics_lib.save_table_png(self.eval_rows, cols,
                                 self.workdir / "summary.png", "evaluation")
      if any("@" in str(r["after"]) for r in self.eval_rows):
        self._plot_evaluations()
      print(table)

  def _plot_evaluations(self):
    """eval_curves.png: the held-out metrics against the step, one point per
    evaluation (within stages with eval_every, and at each stage's end)."""
    rows = [dict(r, stage=str(r["after"]).split("@")[0]) for r in self.eval_rows
            if "step" in r]  # rows from checkpoints before steps were kept
    keys = [k for k in EVAL_CURVE_KEYS if any(k in r for r in rows)] or sorted(
        {k for r in rows for k, v in r.items() if k not in ("step", "n")
         and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if len(rows) > 1 and keys:
      metrics_lib.plot_curves(rows, self.workdir / "eval_curves.png", keys=keys,
                              title="held-out evaluation", smooth=1)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(old: dict, new: dict) -> list[str]:
  """'field: old -> new' for each field whose value differs between two
  config dicts, `log.*` and `workdir` aside (they change no result)."""
  absent = object()
  # Compared as a checkpoint stores them: through JSON (tuples as lists).
  a, b = (_flatten(json.loads(json.dumps(c))) for c in (old, new))
  out = []
  for k in sorted(a.keys() | b.keys()):
    if k == "workdir" or k.startswith("log."):
      continue
    x, y = a.get(k, absent), b.get(k, absent)
    if x != y:
      show = lambda v: "(absent)" if v is absent else repr(v)
      out.append(f"{k}: {show(x)} -> {show(y)}")
  return out
