"""The launcher end to end on a shrunken demo: every stage runs, the SFT loss
falls and its held-out reward rises, the outputs are written, and a run killed with SIGKILL mid-RL resumes to
exactly the metrics of an uninterrupted run. In process (experiment.build_trainer),
a resume under a changed config or into a curriculum without the checkpoint's
stage is refused by name."""

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rsearch_jax import config_defaults, experiment, sharding
from rsearch_jax.checkpoint import Checkpointer, CheckpointError
from rsearch_jax.data import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A few steps of every stage, tiny sizes: the curriculum's plumbing, not its
# learning (the demo itself shows that), except that the cold start must
# teach the tiny model to call search.
COPY, PRETRAIN, SFT, RL = 2, 3, 80, 3
# A sample trace at the second RL step only (pretraining and SFT steps log none).
TRACE_STEP = COPY + PRETRAIN + SFT + 2
TINY = [
    "--config.world.pretrain_repeats=2", "--config.world.num_people=20",
    "--config.world.num_films=10", "--config.world.num_companies=6",
    "--config.world.num_cities=6",
    "--config.model.vocab_size=400", "--config.model.hidden_size=128",
    "--config.model.intermediate_size=256", "--config.model.num_layers=2",
    "--config.data.seq_len=384", "--config.data.sft_examples=8",
    "--config.data.sft_renamed_worlds=0", "--config.data.sft_perturbed_worlds=0",
    "--config.data.sft_renamed_two_hop=0", "--config.data.copy_examples=8",
    # A 400-piece tokenizer with a piece per name word leaves prompts too
    # long for max_prompt_len.
    "--config.data.whole_word_names=False",
    # The cold start on its trajectories alone, whose loss and reward the
    # test follows (with 4 rehearsal texts mixed in, it failed; the SFT set
    # with rehearsal is experiment_test's).
    "--config.data.sft_rehearsal=0",
    f"--config.stages.copy.steps={COPY}", "--config.stages.copy.batch_size=4",
    f"--config.stages.pretrain.steps={PRETRAIN}",
    "--config.stages.pretrain.batch_size=2",
    f"--config.stages.sft.steps={SFT}", "--config.stages.sft.batch_size=4",
    "--config.stages.sft.learning_rate=3e-3",
    f"--config.stages.rl.steps={RL}", "--config.stages.rl.batch_size=2",
    "--config.rl.group_size=2", "--config.log.checkpoint_every=1",
    f"--config.log.trace_every={TRACE_STEP}",
    "--config.sampling.max_prompt_len=128", "--config.sampling.max_len=420",
    "--config.sampling.max_new_tokens=140",
    # Held-out rollouts scored with R1-Searcher's stage-1 reward (0.5 for a
    # search call, 0.5 for the think/answer format): partial credit that a
    # tiny model's cold start can earn.
    "--config.eval.rewards=retrieval,format",
]
VOLATILE = {"time", "seconds", "tokens_per_s", "sample_seconds",
            "update_seconds"}  # wall-clock, not results


def _cmd(workdir, *extra):
  return [sys.executable, str(ROOT / "launch" / "train.py"),
          f"--config={ROOT / 'configs' / 'r1pp.py'}", f"--config.workdir={workdir}",
          *TINY, *extra]


def _env():
  env = dict(os.environ, RSEARCH_NO_PROGRESS="1")
  env.pop("XLA_FLAGS", None)  # one device, as a user's CPU run
  return env


def _metrics(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("full")
  run = subprocess.run(_cmd(workdir, "--config.eval.num_questions=8",
                            "--config.eval.batch_size=8"),
                       capture_output=True, text=True, timeout=900, cwd=ROOT,
                       env=_env())
  assert run.returncode == 0, run.stderr[-4000:]
  return workdir, run.stdout


def test_every_stage_runs_and_writes_its_outputs(full_run):
  workdir, stdout = full_run
  rows = _metrics(workdir)
  train = [r for r in rows if not r["stage"].startswith(("start",)) and "loss" in r]
  stages = [r["stage"] for r in train]
  assert stages == (["copy"] * COPY + ["pretrain"] * PRETRAIN + ["sft"] * SFT
                    + ["rl"] * RL)
  assert [r["step"] for r in train] == list(range(1, COPY + PRETRAIN + SFT + RL + 1))
  sft = [r["loss"] for r in train if r["stage"] == "sft"]
  assert sft[-1] < sft[0], sft  # the cold start learns its trajectories
  # ... and its held-out rollouts earn more of the RL reward than before it.
  reward = {r["stage"]: r["eval/reward"] for r in rows if "eval/reward" in r}
  assert reward["sft"] > reward["pretrain"], reward
  rl = [r for r in train if r["stage"] == "rl"]
  for r in rl:
    for k in ("reward", "accuracy", "retrievals", "kl" if "kl" in r else "entropy",
              "response_tokens", "reward_format_penalty", "reward_answer_cem",
              "reward_group_fewest_retrievals", "clip_frac", "grad_norm"):
      assert k in r, (k, sorted(r))
  for name in ("curves.png", "summary.md", "summary.png", "traces.jsonl"):
    assert (workdir / name).is_file(), name
  assert (workdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  table = (workdir / "summary.md").read_text()
  for after in ("start", "copy", "pretrain", "sft", "rl"):
    assert f"| {after} " in table or f"| {after}|" in table, table
  assert "em/internal" in table and "retrievals/corpus" in table
  assert list((workdir / "tensorboard").glob("events.*"))


def test_a_trace_shows_the_rl_steps_question_and_gold_answer(full_run,
                                                           tmp_path):
  workdir, _ = full_run
  traces = [json.loads(l) for l in (workdir / "traces.jsonl").read_text().splitlines()]
  assert [(t["step"], t["name"]) for t in traces] == [(TRACE_STEP, "trace")]
  text = traces[0]["text"]
  # The step's first prompt: the RL stage (index 3: copy, pretrain, sft, rl)
  # visits train_unseen in the order of NumPy's permutation seeded
  # [seed + stage index, epoch] (data._qa.PromptIterator), two prompts a step.
  cfg = _demo_config(tmp_path)
  assert cfg.curriculum.split(",").index("rl") == 3
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  train_unseen = experiment._synthetic(cfg, mesh)[3]["train_unseen"]
  order = np.random.default_rng([cfg.seed + 3, 0]).permutation(len(train_unseen))
  question = train_unseen[order[2]].question  # second step, first prompt
  # Its gold answers, from the world itself.
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  gold = {q.question: list(q.answers) for q in world.questions()}[question]
  assert text.startswith(f"prompt: {question}\ngold: {gold}\nreward: "), text


def test_eval_launcher_reproduces_the_runs_last_evaluation(full_run, tmp_path):
  # launch/eval.py rebuilds the demo's policy from the run's workdir (its
  # tokenizer, the world of its config) and restores the last checkpoint:
  # its greedy evaluation of the same held-out questions must give the
  # numbers the trainer logged after its last stage.
  workdir, _ = full_run
  want = [r for r in _metrics(workdir) if "eval/em" in r][-1]
  assert want["stage"] == "rl"
  assert want["eval/retrievals"] > 0  # rollouts that search: not all-zero rows
  out = tmp_path / "eval"
  run = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "eval.py"),
       f"--config={ROOT / 'configs' / 'r1pp.py'}", *TINY,
       f"--checkpoint={workdir}", "--modes=agent", "--limit=8", "--batch_size=8",
       f"--data={workdir / 'data' / 'synthetic_heldout.jsonl'}", f"--out={out}"],
      capture_output=True, text=True, timeout=900, cwd=ROOT, env=_env())
  assert run.returncode == 0, run.stderr[-4000:]
  assert f"step {COPY + PRETRAIN + SFT + RL}" in run.stdout
  got = json.loads((out / "metrics.json").read_text())[0]
  keys = [k for k in got if k.split("/")[0] in (
      "em", "f1", "cover_em", "retrievals", "answered", "n")]
  assert "em/internal" in keys and "retrievals/corpus" in keys
  assert {k: got[k] for k in keys} == pytest.approx(
      {k: want[f"eval/{k}"] for k in keys})
  # Refused, with the reason: a synthetic config without a checkpoint.
  bad = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "eval.py"),
       f"--config={ROOT / 'configs' / 'r1pp.py'}", *TINY, "--modes=agent",
       f"--data={workdir / 'data' / 'synthetic_heldout.jsonl'}", f"--out={out}"],
      capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env())
  assert bad.returncode != 0
  assert "give --checkpoint=<the run's workdir>" in bad.stderr, bad.stderr[-2000:]


def test_sigkill_mid_rl_then_resume_matches_uninterrupted(full_run, tmp_path):
  reference, _ = full_run
  # The same run without evaluation; evaluation rows are not step metrics.
  want = [r for r in _metrics(reference) if "loss" in r]
  workdir = tmp_path / "killed"
  cmd = _cmd(workdir, "--config.eval.num_questions=0")
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, env=_env())
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 600
  # Kill once the first RL step is logged: mid-curriculum, mid-RL.
  while time.time() < deadline and proc.poll() is None:
    if metrics.is_file() and any(json.loads(l)["step"] > COPY + PRETRAIN + SFT
                                 for l in metrics.read_text().splitlines() if l):
      break
    time.sleep(0.2)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                       env=_env())
  assert run.returncode == 0, run.stderr[-4000:]
  got = [r for r in _metrics(workdir) if "loss" in r]
  assert [r["step"] for r in got] == list(range(1, COPY + PRETRAIN + SFT + RL + 1))
  assert got == want


# -- resuming under another config (in process, two 2-step pretraining stages) --


def _override(cfg, pairs):
  """Sets each dotted field to its value (a flag's text converted to the
  field's type)."""
  for key, value in pairs:
    *parents, leaf = key.split(".")
    node = cfg
    for name in parents:
      node = node[name]
    kind = type(node[leaf])
    if isinstance(value, str) and kind is not str:
      value = value == "True" if kind is bool else kind(value)
    node[leaf] = value
  return cfg


def _demo_config(workdir):
  """configs/r1pp.py with the TINY flags, as the launcher gets them."""
  spec = importlib.util.spec_from_file_location("r1pp", ROOT / "configs" / "r1pp.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  flags = [f[len("--config."):].split("=", 1) for f in TINY]
  return _override(module.get_config("demo"),
                   [*flags, ("workdir", str(workdir))])


def _tiny_config(workdir, **fields):
  """The TINY config with two pretraining stages of 2 steps (a checkpoint
  each step; 8 rows of 128 tokens, one a device), then `fields`
  ({"rl.loss.kl_coef": ...})."""
  cfg = _demo_config(workdir)
  cfg.stages.pretrain2 = config_defaults.stage("pretrain", 2, "pretrain", 8)
  # FSDP over the test session's 8 simulated devices (conftest).
  return _override(cfg, [
      ("mesh.fsdp", -1), ("curriculum", "pretrain,pretrain2"),
      ("stages.pretrain.steps", 2), ("stages.pretrain.batch_size", 8),
      ("data.seq_len", 128), ("eval.num_questions", 0),
      ("log.tensorboard", False), *fields.items()])


def _run(workdir, **fields):
  return experiment.build_trainer(_tiny_config(workdir, **fields)).run()


@pytest.fixture(scope="module")
def paused_run(tmp_path_factory):
  """The workdir of a finished 4-step run (checkpoint at step 4, stage
  'pretrain2' done); tests copy it."""
  workdir = tmp_path_factory.mktemp("paused") / "run"
  _run(workdir)
  return workdir


def _copy(paused_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(paused_run, workdir)
  return workdir


def test_resume_under_a_changed_config_names_each_change(paused_run, tmp_path):
  workdir = _copy(paused_run, tmp_path)
  ckpt = Checkpointer(workdir / "checkpoints")
  stored = ckpt.read_meta(4)["config"]
  ckpt.close()
  # The checkpoint holds the run's config, as given.
  assert stored["curriculum"] == "pretrain,pretrain2"
  assert stored["rl"]["loss"]["kl_coef"] == 0.0
  assert stored["stages"]["pretrain2"]["steps"] == 2
  before = (workdir / "metrics.jsonl").read_text()
  # An RL field and a stage's length changed; log.* and the workdir (a copy)
  # differ too, and are not changes.
  changed = {"rl.loss.kl_coef": 0.001, "stages.pretrain2.steps": 3,
             "log.trace_every": 7}
  with pytest.raises(CheckpointError) as e:
    _run(workdir, **changed)
  message = str(e.value)
  for text in (str(workdir / "checkpoints"), "step 4",
               "rl.loss.kl_coef: 0.0 -> 0.001", "stages.pretrain2.steps: 2 -> 3",
               "--config.log.allow_config_changes=True"):
    assert text in message, message
  assert "trace_every" not in message and "workdir:" not in message, message
  assert (workdir / "metrics.jsonl").read_text() == before  # nothing ran
  # Branching on purpose: resumes at step 4 and trains the one added step.
  with pytest.warns(UserWarning, match="rl.loss.kl_coef: 0.0 -> 0.001"):
    _run(workdir, **changed, **{"log.allow_config_changes": True})
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["stage"]) for r in rows] == [
      (1, "pretrain"), (2, "pretrain"), (3, "pretrain2"), (4, "pretrain2"),
      (5, "pretrain2")]
  assert (workdir / "metrics.jsonl").read_text().startswith(before)
  ckpt = Checkpointer(workdir / "checkpoints")
  assert ckpt.read_meta(5)["config"]["rl"]["loss"]["kl_coef"] == 0.001
  ckpt.close()


def test_resume_into_a_curriculum_without_the_checkpoints_stage(paused_run,
                                                                tmp_path):
  workdir = _copy(paused_run, tmp_path)
  # Without allow_config_changes the changed curriculum is named first.
  with pytest.raises(CheckpointError,
                     match="curriculum: 'pretrain,pretrain2' -> 'pretrain'"):
    _run(workdir, curriculum="pretrain")
  branch = {"log.allow_config_changes": True}
  # A shorter curriculum: the checkpoint's stage is not in it.
  with pytest.warns(UserWarning), pytest.raises(CheckpointError) as e:
    _run(workdir, curriculum="pretrain", **branch)
  message = str(e.value)
  for text in (str(workdir / "checkpoints"), "stage 'pretrain2'",
               "1 stage(s): pretrain"):
    assert text in message, message
  # Another stage at the checkpoint's place.
  cfg = _tiny_config(workdir, curriculum="pretrain,other", **branch)
  cfg.stages.other = config_defaults.stage("pretrain", 2, "pretrain", 8)
  with pytest.warns(UserWarning), pytest.raises(CheckpointError) as e:
    experiment.build_trainer(cfg).run()
  message = str(e.value)
  for text in ("saved in stage 'pretrain2'", "stage 2 of this curriculum is "
               "'other'"):
    assert text in message, message
