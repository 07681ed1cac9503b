"""The launcher refuses bad configs with one clear line, before any work."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _train(*overrides: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, str(ROOT / "launch" / "train.py"),
       "--config=configs/r1pp.py", *overrides],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={"TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu",
           "PATH": "/usr/bin:/bin", "HOME": str(pathlib.Path.home())})


@pytest.mark.parametrize("override,expected", [
    # A misspelled field: named, with the suggestion ml_collections makes.
    ("--config.rl.loss.kl_cof=0.1", ['kl_cof', 'Did you mean "kl_coef"']),
    # A value of the wrong type, naming the flag.
    ("--config.rl.loss.kl_coef=abc", ["--config.rl.loss.kl_coef=abc", "float"]),
    # An inconsistent config, naming both fields.
    ("--config.sampling.max_len=10", ["sampling.max_len=10",
                                      "sampling.max_prompt_len"]),
    # An unknown reward name, naming the field and the known rewards.
    ("--config.stages.rl.rewards=format_penalty,answer_cm",
     ["stages.rl.rewards", "unknown reward 'answer_cm'", "answer_cem"]),
    # An out-of-range count, naming the field.
    ("--config.data.sft_renamed_worlds=-1", ["data.sft_renamed_worlds=-1",
                                             ">= 0"]),
    # Multi-hop trajectories asked of no renamed world: both fields named.
    ("--config.data.sft_renamed_two_hop=2 --config.data.sft_renamed_worlds=0"
     " --config.data.sft_perturbed_worlds=0",
     ["data.sft_renamed_two_hop=2", "data.sft_renamed_worlds > 0",
      "data.sft_perturbed_worlds > 0"]),
    ("--config.data.sft_perturbed_worlds=-2", ["data.sft_perturbed_worlds=-2",
                                               ">= 0"]),
    # RL on the renamed copies' questions without any copy: both fields.
    ("--config.stages.rl.data=train_multihop_renamed",
     ["stages.rl.data='train_multihop_renamed'",
      "data.rl_renamed_worlds > 0"]),
    ("--config.data.rl_renamed_worlds=-1", ["data.rl_renamed_worlds=-1",
                                            ">= 0"]),
    # Smeared keys asked of real weights: named, with the fix.
    ("--config.model.smear_keys=True --config.model.path=asset:x",
     ["model.smear_keys applies to a scratch model only",
      "--config.model.smear_keys=False"]),
    # The copy warm-up stage with no copy examples: the stage and the field.
    ("--config.data.copy_examples=0", ["stages.copy trains on the copy "
                                       "examples", "data.copy_examples > 0"]),
    # A name outside a field's choices: the field, the value, every choice.
    ("--config.rl.advantage=ppo", ["rl.advantage='ppo'", "'reinforce_pp', "
                                   "'group_norm', 'grpo'"]),
    ("--config.rl.memorization=recall", ["rl.memorization='recall'",
                                         "'none', 'rule', 'policy'"]),
    ("--config.rl.loss.aggregation=sum", [
        "rl.loss.aggregation='sum'",
        "'token_mean', 'seq_mean_token_mean', 'seq_mean_token_sum'"]),
    ("--config.rl.loss.kl_kind=k1", ["rl.loss.kl_kind='k1'",
                                     "'k1_reward', 'k2', 'k3'"]),
    ("--config.stages.pretrain.kind=dpo", ["stages.pretrain.kind='dpo'",
                                           "'pretrain', 'sft', 'rl'"]),
    # The demo's 64 rollouts a step do not split into 3 x 1 updates.
    ("--config.rl.mini_batches=3", ["stages.rl: batch_size*rl.group_size=64",
                                    "rl.mini_batches=3"]),
    ("--config.rl.epochs=0", ["rl.epochs=0 should be >= 1"]),
    ("--config.rl.length_groups=4 --config.rl.micro_batches=2",
     ["rl.length_groups=4 needs rl.micro_batches=1 (got 2)"]),
    ("--config.data.pretrain_shuffles=0",
     ["data.pretrain_shuffles=0 should be >= 1"]),
    ("--config.data.sft_rehearsal=-5", ["data.sft_rehearsal=-5 should be >= 0"]),
    # Two problems at once: both named, in one error.
    ("--config.data.sft_sort_window=-1 --config.eval.every=-3",
     ["data.sft_sort_window=-1 should be >= 0", "eval.every=-3 should be >= 0"]),
], ids=["misspelled", "wrong_type", "inconsistent", "unknown_reward",
        "negative_count", "two_hop_without_renamed_worlds",
        "negative_perturbed_worlds", "renamed_rl_data_without_copies",
        "negative_rl_renamed_worlds",
        "smeared_keys_on_real_weights", "copy_stage_no_data", "bad_advantage",
        "bad_memorization", "bad_aggregation", "bad_kl_kind",
        "bad_stage_kind", "mini_batches_do_not_divide", "no_epochs",
        "length_groups_with_micro_batches",
        "no_pretrain_shuffles", "negative_rehearsal", "negative_sort_window"])
def test_bad_config_is_one_clear_error(override, expected, tmp_path):
  out = _train(*override.split(), f"--config.workdir={tmp_path}/run")
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1] != ""
  for text in expected:
    assert text in out.stderr, out.stderr[-2000:]
  # Refused before any work started: nothing was written.
  assert not (tmp_path / "run").exists()


def _compare(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, str(ROOT / "launch" / "compare.py"), *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={"TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu",
           "PATH": "/usr/bin:/bin", "HOME": str(pathlib.Path.home())})


def test_compare_plots_two_runs_and_prints_their_means(tmp_path):
  import json

  rewards = {"a": [0.1, 0.2, 0.6], "b": [-1.0, 0.5, 2.0]}
  for name, values in rewards.items():
    (tmp_path / name).mkdir()
    with open(tmp_path / name / "metrics.jsonl", "w") as f:
      f.write(json.dumps({"step": 1, "stage": "sft", "loss": 3.0}) + "\n")
      for i, v in enumerate(values):
        f.write(json.dumps({"step": 2 + i, "stage": "rl", "reward": v}) + "\n")
  out = tmp_path / "cmp.png"
  run = _compare(f"--runs=a={tmp_path / 'a'},b={tmp_path / 'b'}", "--keys=reward",
                 "--stages=rl", f"--out={out}")
  assert run.returncode == 0, run.stderr[-2000:]
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  means = {line.split()[0]: float(line.split()[1])
           for line in run.stdout.splitlines() if line.split()[:1] in (["a"], ["b"])}
  assert means == pytest.approx({"a": 0.3, "b": 0.5})


@pytest.mark.parametrize("runs,expected", [
    ("a=/nonexistent/run", "--runs: a: no metrics log at /nonexistent/run/metrics.jsonl"),
    ("a", "--runs: 'a' is not name=workdir"),
])
def test_compare_names_a_bad_run(runs, expected):
  run = _compare(f"--runs={runs}")
  assert run.returncode != 0
  assert expected in run.stderr
  assert "Traceback" not in run.stderr
