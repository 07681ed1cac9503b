"""One process of the two-process multi-host test (see multihost_test.py).

    python tests/multihost_worker.py PROCESS_ID PORT OUT_JSON

Joins a 2-process JAX cluster on loopback (4 simulated CPU devices each, gloo
collectives), builds the sampler test's model sharded over the global 8-device
(data=2, fsdp=4) mesh, samples, and writes what it saw to OUT_JSON.
"""

import json
import os
import pathlib
import sys

process_id, port, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                           num_processes=2, process_id=process_id,
                           initialization_timeout=120)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import sampler_test as st  # noqa: E402  (its model, prompts and settings)

from rsearch_jax import sharding  # noqa: E402
from rsearch_jax.sampling import Sampler  # noqa: E402
from rsearch_jax.testing import DictRetriever  # noqa: E402

mesh = sharding.make_mesh(data=2, fsdp=4)
model = sharding.create_sharded(lambda: st._model(), mesh)
retriever = DictRetriever()
out = Sampler(model, st.TOK, st._config(temperature=0.8), retriever=retriever,
              doc_format=st.FMT, mesh=mesh)(st.PROMPTS, seed=5)
local_rows = sorted({int(i) for d in mesh.local_devices
                     for i in [list(mesh.devices.flat).index(d)]})
pathlib.Path(out_path).write_text(json.dumps(dict(
    process_index=jax.process_index(), device_count=jax.device_count(),
    local_rows=local_rows,
    tokens=out.tokens.tolist(), loss_mask=out.loss_mask.tolist(),
    num_searches=out.num_searches.tolist(),
    searched_rows=[i for i, rows in enumerate(out.searches) if rows],
    calls=retriever.calls)))
jax.distributed.shutdown()
