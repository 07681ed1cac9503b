"""Multi-host for real on one machine: two processes on loopback, 4 simulated
CPU devices each, joined by jax.distributed.initialize (gloo collectives)
into one 8-device mesh. Each process runs the retrieval callbacks for the rows
it holds, and both get the same rollouts as one process on one device."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

import sampler_test as st
from rsearch_jax.sampling import Sampler
from rsearch_jax.testing import DictRetriever

WORKER = pathlib.Path(__file__).resolve().parent / "multihost_worker.py"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_share_one_mesh_and_retrieve_for_their_rows(tmp_path):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  outs = [tmp_path / f"p{i}.json" for i in range(2)]
  procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), str(port),
                             str(outs[i])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  got = [json.loads(o.read_text()) for o in outs]

  ref = Sampler(st._model(), st.TOK, st._config(temperature=0.8),
                retriever=DictRetriever(), doc_format=st.FMT)(st.PROMPTS, seed=5)
  searched = {i for i in range(len(st.PROMPTS)) if ref.searches[i]}
  assert searched, "the reference rollouts were meant to search"
  for g in got:
    assert g["device_count"] == 8
    # Both processes see the whole batch, identical to one device.
    np.testing.assert_array_equal(np.asarray(g["tokens"]), ref.tokens)
    np.testing.assert_array_equal(np.asarray(g["loss_mask"]), ref.loss_mask)
    assert g["num_searches"] == ref.num_searches.tolist()
    # Each process retrieved only for the rows its devices hold.
    assert set(g["searched_rows"]) <= set(g["local_rows"])
  assert {g["process_index"] for g in got} == {0, 1}
  assert set(got[0]["local_rows"]).isdisjoint(got[1]["local_rows"])
  assert set(got[0]["searched_rows"]) | set(got[1]["searched_rows"]) == searched
