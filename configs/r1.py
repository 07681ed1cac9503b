"""R1-Searcher (arXiv 2503.05592): configs selected by preset suffix.

    python launch/sample.py --config=configs/r1.py:smollm2
    python launch/sample.py --config=configs/r1.py:smollm2 --config.sampling.temperature=0.7

Presets:
  smollm2   SmolLM2-135M-Instruct (the GGUF asset) over the wiki-vital-en
            corpus (~10k Wikipedia lead sections) with in-process BM25.

Fields:
  method            "r1": queries in <|begin_of_query|> ... <|end_of_query|>,
                    documents in <|begin_of_documents|> ... <|end_of_documents|>.
  seed              PRNG seed of sampling.
  model.path        "asset:NAME", a .gguf file or an HF safetensors directory.
  model.dtype       compute dtype ("float32" | "bfloat16").
  model.param_dtype storage dtype of the parameters.
  model.remat       recompute activations in the backward pass.
  model.chat        "chatml" (instruct models) or "none" (base-model prompt).
  model.add_tags    make each tag one new token (False: tags stay text the
                    pretrained model can already write).
  mesh.data/fsdp/tensor   mesh shape; one axis may be -1 (the rest).
  mesh.distributed  call jax.distributed.initialize() (multi-host pods).
  retriever.kind    "bm25" (in process), "http" (a server) or "none".
  retriever.corpus  "asset:wiki-vital-en" or a corpus file (bm25).
  retriever.url / protocol    server URL and "r1searcher" | "search_r1" (http).
  sampling.*        max_prompt_len, max_len (slots incl. prompt and documents),
                    max_new_tokens (sampled tokens), temperature, top_k, top_p,
                    max_searches (per row), doc_block_len (tokens of one
                    document block), top_k_docs, doc_tokens (per document).
  data.eval_file    JSONL of questions (fields: question, answer).
  data.num_questions   how many to run.
"""

import ml_collections

PRESETS = ("smollm2",)


def get_config(preset: str = "smollm2") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(
        f"configs/r1.py: unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.method = "r1"
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      path="asset:smollm2-135m-instruct", dtype="float32",
      param_dtype="float32", remat=False, chat="chatml", add_tags=False))
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1,
                                          distributed=False))
  c.retriever = ml_collections.ConfigDict(dict(
      kind="bm25", corpus="asset:wiki-vital-en", url="", protocol="r1searcher"))
  c.sampling = ml_collections.ConfigDict(dict(
      max_prompt_len=384, max_len=1024, max_new_tokens=256, temperature=0.0,
      top_k=0, top_p=1.0, max_searches=4, doc_block_len=200, top_k_docs=3,
      doc_tokens=60))
  c.data = ml_collections.ConfigDict(dict(
      eval_file="../shared/data/r1_searcher/eval_set/bamboogle.jsonl",
      num_questions=8))
  c.lock()
  return c
