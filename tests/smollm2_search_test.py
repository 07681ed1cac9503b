"""Smoke test of the whole search loop with a real model: SmolLM2-135M-Instruct
(GGUF asset) with the R1-Searcher instruct prompt over the wiki-vital-en corpus
(BM25), through the launcher, on 8 Bamboogle questions. Quality is not
asserted: it completes, prints every trace, and accounts for every row."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sample_launcher_runs_8_questions(shared_data, smollm2_gguf):
  eval_file = shared_data / "r1_searcher" / "eval_set" / "bamboogle.jsonl"
  cmd = [sys.executable, str(ROOT / "launch" / "sample.py"),
         "--config=" + str(ROOT / "configs" / "r1.py") + ":smollm2",
         f"--config.eval.file={eval_file}", "--config.eval.num_questions=8",
         "--config.sampling.max_new_tokens=96", "--config.sampling.max_len=900"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # 1 device
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  print(run.stdout)
  out = run.stdout
  assert len(re.findall(r"^=== \[\d\] ", out, re.M)) == 8
  stops = re.findall(r"^--- stop: (\w+), retrievals: (\d+)$", out, re.M)
  assert len(stops) == 8 and all(s in ("stop", "budget", "length") for s, _ in stops)
  assert re.search(r"^8 rollouts, stop reasons", out, re.M)
