"""The search-in-the-loop sampler against a cache-free reference loop, its
log-probs against a teacher-forced pass, its loss mask, and the mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rsearch_jax import sharding
from rsearch_jax.retrieval import RoutedRetriever
from rsearch_jax.models import Decoder
from rsearch_jax.sampling import (DocumentFormat, Sampler, SamplingConfig,
                                  sample_token, token_logprobs)
from rsearch_jax.sampling._handoff import BUDGET_TEXT, NO_RESULT_TEXT
from rsearch_jax.testing import (CharTokenizer, DictRetriever,
                                 randomize_smear, tiny_model)

jax.config.update("jax_default_matmul_precision", "highest")

TOK = CharTokenizer()
Q_BEGIN, Q_END = TOK.tag_id("<|begin_of_query|>"), TOK.tag_id("<|end_of_query|>")
D_BEGIN, D_END = TOK.tag_id("<|begin_of_documents|>"), TOK.tag_id("<|end_of_documents|>")
ANSWER_END = TOK.tag_id("</answer>")
FMT = DocumentFormat(top_k=2, doc_tokens=14)
PROMPTS = ["who is x?", "where was the director born?", "a", "when", "b c d e",
           "q", "the year?", "name it"]


def _config(**kw):
  base = dict(max_prompt_len=32, max_len=170, max_new_tokens=40,
              temperature=0.0, max_searches=2, doc_block_len=40)
  base.update(kw)
  return SamplingConfig(**base)


def _model(seed=3, favour=(Q_END,), strength=2.0, smear=False):
  model = tiny_model(TOK.vocab_size, seed=seed, favour=favour,
                     strength=strength, smear_keys=smear)
  return randomize_smear(model, seed) if smear else model


def _full_pass(model: Decoder, length: int):
  """seq -> greedy next token from a cache-free forward pass over all of seq."""
  fwd = nnx.jit(lambda m, t, p: m(t, p)[0])

  def next_token(seq):
    n = len(seq)
    tokens = np.zeros((1, length), np.int32)
    tokens[0, :n] = seq
    positions = np.where(np.arange(length) < n, np.arange(length), -1)[None]
    logits = fwd(model, jnp.asarray(tokens), jnp.asarray(positions, jnp.int32))
    return jnp.argmax(logits[0, n - 1])

  return next_token


def reference_rollout(model: Decoder, prompt: list[int], cfg: SamplingConfig,
                      handoff) -> tuple[list[int], list[int], int]:
  """One row, no cache: the full forward pass over the whole sequence at
  every step, greedy, documents appended when the query tag is sampled."""
  seq, mask = list(prompt), [0] * len(prompt)
  n_sampled = n_search = 0
  retriever = handoff.retriever
  # One compiled full pass over a right-padded buffer (padding has position
  # -1, so it is never attended to); eager calls would compile every op anew
  # for each sequence length.
  full_pass = _full_pass(model, cfg.max_len)
  # The sampler's rows hold max_len slots, the left-padded prompt included.
  limit = cfg.max_len - (cfg.max_prompt_len - len(prompt))
  while len(seq) < limit:
    t = int(full_pass(seq))
    seq.append(t)
    mask.append(1)
    n_sampled += 1
    if t in (ANSWER_END, TOK.eos_id) or n_sampled >= cfg.max_new_tokens:
      break
    if t == Q_END:
      query = handoff.query_text(np.asarray(seq), len(seq))
      if n_search >= cfg.max_searches:
        block = handoff.build_block([], note=BUDGET_TEXT)
      else:
        docs = retriever.search([query], FMT.top_k)[0] if query else []
        n_search += bool(query)
        block = handoff.build_block(docs) if docs else handoff.build_block(
            [], note=NO_RESULT_TEXT)
      room = limit - len(seq)
      seq += block[:room]
      mask += [0] * len(block[:room])
  return seq, mask, n_search


# Smeared keys carry the last real key per row through prefill, decoding and
# the splice of document blocks: the same invariants must hold with them.
@pytest.mark.parametrize("splice_rows,smear", [(1, False), (3, False), (3, True)],
                         ids=["rows1", "rows3", "rows3_smeared_keys"])
def test_greedy_sampler_equals_cache_free_reference(splice_rows, smear):
  model = _model(smear=smear)
  cfg = _config(splice_rows=splice_rows)
  sampler = Sampler(model, TOK, cfg, retriever=DictRetriever(), doc_format=FMT)
  out = sampler(PROMPTS)
  p = out.prompt_len
  searches = []
  for i, prompt in enumerate(PROMPTS):
    ids = TOK.encode(prompt)
    ref_seq, ref_mask, ref_n = reference_rollout(model, ids, cfg, sampler.handoff)
    got = out.tokens[i, p - len(ids):out.lengths[i]].tolist()
    assert got == ref_seq, (i, TOK.decode(got), TOK.decode(ref_seq))
    assert out.loss_mask[i, p - len(ids):out.lengths[i]].tolist() == ref_mask
    assert out.num_searches[i] == ref_n
    assert len(out.searches[i]) == ref_seq[len(ids):].count(Q_END) - (
        ref_seq[-1] == Q_END)
    searches.append(ref_n)
  # The batch covers rows with no, one, and the maximum number of searches,
  # and rows that were refused a search past the budget.
  assert {0, 1, 2} <= set(searches), searches
  assert any(not r.ran for rows in out.searches for r in rows)


def test_documents_are_masked_and_match_the_log():
  model = _model()
  cfg = _config()
  retriever = DictRetriever()
  sampler = Sampler(model, TOK, cfg, retriever=retriever, doc_format=FMT)
  out = sampler(PROMPTS)
  for i in range(len(PROMPTS)):
    row = out.tokens[i, :out.lengths[i]].tolist()
    mask = out.loss_mask[i, :out.lengths[i]].tolist()
    # Every retrieved block: opened right after a sampled query tag, mask 0
    # from its first to its last token; everything sampled has mask 1.
    blocks = 0
    j = out.prompt_len
    while j < len(row):
      if mask[j] == 0:
        assert row[j - 1] == Q_END and mask[j - 1] == 1, (i, j)
        assert row[j] == D_BEGIN
        k = j
        while k < len(row) and mask[k] == 0:
          k += 1
        assert k == len(row) or row[k - 1] == TOK.encode("\n")[0]
        assert D_END in row[j:k] or k == len(row)
        blocks += 1
        j = k
      else:
        j += 1
    assert blocks == len(out.searches[i])
    assert out.logprobs[i][out.loss_mask[i] == 0].tolist() == [0.0] * int(
        (out.loss_mask[i] == 0).sum())
  # The queries that reached the retriever are the text between the tags.
  for rows in out.searches:
    for rec in rows:
      if rec.ran:
        assert rec.docs[0].text.startswith("doc 0 about ")


def test_self_written_document_tags_are_sampled_tokens():
  model = _model(seed=3, favour=(D_BEGIN, D_END, ANSWER_END), strength=2.5)
  retriever = DictRetriever()
  out = Sampler(model, TOK, _config(), retriever=retriever, doc_format=FMT)(PROMPTS)
  self_written = 0
  for i in range(len(PROMPTS)):
    row, mask = out.tokens[i], out.loss_mask[i]
    for j in range(out.prompt_len, out.lengths[i]):
      if mask[j] == 1:
        self_written += int(row[j] in (D_BEGIN, D_END))
      elif mask[j - 1] == 1:
        # A retrieved block (mask 0) only ever starts right after a sampled
        # query tag, never after a document tag the model wrote.
        assert row[j - 1] == Q_END, (i, j, TOK.decode(row[j - 3:j + 1]))
  assert self_written > 0, "the model was meant to write document tags itself"
  # They never triggered retrieval: every search follows a sampled query tag.
  n_queries = sum(
      int(((out.tokens[i] == Q_END) & (out.loss_mask[i] == 1)).sum())
      for i in range(len(PROMPTS)))
  assert sum(len(r) for r in out.searches) <= n_queries


@pytest.mark.parametrize("temperature,top_k,top_p,smear",
                         [(1.0, 0, 1.0, False), (0.7, 5, 0.9, False),
                          (1.0, 0, 1.0, True)])
def test_logprobs_equal_teacher_forced_pass(temperature, top_k, top_p, smear):
  model = _model(smear=smear)
  cfg = _config(temperature=temperature, top_k=top_k, top_p=top_p)
  out = Sampler(model, TOK, cfg, retriever=DictRetriever(), doc_format=FMT)(
      PROMPTS, seed=11)
  logits, _ = model(jnp.asarray(out.tokens), jnp.asarray(out.positions))
  ref = token_logprobs(logits[:, :-1], jnp.asarray(out.tokens[:, 1:]), temperature)
  sampled = out.loss_mask[:, 1:] == 1
  assert sampled.sum() > 100
  np.testing.assert_allclose(out.logprobs[:, 1:][sampled],
                             np.asarray(ref)[sampled], atol=1e-4)
  assert (out.loss_mask[:, :out.prompt_len] == 0).all()


@pytest.mark.parametrize("mesh_shape,smear",
                         [(dict(data=2, fsdp=4), False),
                          (dict(fsdp=4, tensor=2), False),
                          (dict(fsdp=4, tensor=2), True)],
                         ids=["data2_fsdp4", "fsdp4_tensor2",
                              "fsdp4_tensor2_smeared_keys"])
def test_same_rollouts_on_the_8_device_mesh(mesh_shape, smear):
  # Two asking rows per shard per splice pass (where a shard holds two rows).
  cfg = _config(temperature=0.8, splice_rows=2)
  ref_out = Sampler(_model(smear=smear), TOK, cfg, retriever=DictRetriever(),
                    doc_format=FMT)(PROMPTS, seed=5)
  mesh = sharding.make_mesh(**mesh_shape)
  model = sharding.create_sharded(lambda: _model(smear=smear), mesh)
  retriever = DictRetriever()
  out = Sampler(model, TOK, cfg, retriever=retriever, doc_format=FMT,
                mesh=mesh)(PROMPTS, seed=5)
  np.testing.assert_array_equal(out.tokens, ref_out.tokens)
  np.testing.assert_array_equal(out.loss_mask, ref_out.loss_mask)
  np.testing.assert_allclose(out.logprobs, ref_out.logprobs, atol=1e-5)
  assert out.num_searches.tolist() == ref_out.num_searches.tolist()
  assert [[r.query for r in rows] for rows in out.searches] == [
      [r.query for r in rows] for rows in ref_out.searches]
  # Each retrieval ran once even where devices hold the same rows (tensor).
  assert sum(len(c) for c in retriever.calls) <= sum(
      len(r) for r in out.searches)
  # The per-host path: each device's callback searched only for its rows.
  shards = 8 // mesh_shape.get("tensor", 1)
  assert max(len(c) for c in retriever.calls) <= len(PROMPTS) // shards


def test_each_device_retrieves_for_its_own_rows():
  """Identical greedy rows search at the same steps: one device batches all
  eight queries into one call; on the data2_fsdp4 mesh each of the 8 devices
  (one row each) calls the retriever for its own row."""
  cfg = _config()
  prompts = [PROMPTS[0]] * 8
  single = DictRetriever()
  Sampler(_model(), TOK, cfg, retriever=single, doc_format=FMT)(prompts)
  mesh = sharding.make_mesh(data=2, fsdp=4)
  model = sharding.create_sharded(lambda: _model(), mesh)
  per_device = DictRetriever()
  Sampler(model, TOK, cfg, retriever=per_device, doc_format=FMT,
          mesh=mesh)(prompts)
  assert single.calls and all(len(c) == 8 for c in single.calls)
  assert len(per_device.calls) == 8 * len(single.calls)
  assert all(len(c) == 1 for c in per_device.calls)


def test_sample_token_filters():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
  cfg = lambda **kw: SamplingConfig(max_prompt_len=1, max_len=2,
                                    max_new_tokens=1, **kw)
  rng = jax.random.key(0)
  greedy = sample_token(logits, rng, cfg(temperature=0.0))
  assert (greedy == 0).all()
  top2 = np.asarray(sample_token(logits, rng, cfg(top_k=2)))
  assert set(top2.tolist()) == {0, 1}
  assert abs((top2 == 0).mean() - 0.5 / 0.8) < 0.05
  nucleus = np.asarray(sample_token(logits, rng, cfg(top_p=0.85)))
  assert set(nucleus.tolist()) == {0, 1, 2}
  full = np.asarray(sample_token(logits, rng, cfg()))
  assert abs((full == 3).mean() - 0.05) < 0.02


def test_prompt_errors_are_clear():
  sampler = Sampler(_model(), TOK, _config(max_prompt_len=4), doc_format=FMT)
  with pytest.raises(ValueError, match="prompt 1 has 9 tokens; max_prompt_len is 4"):
    sampler(["ab", "abcdefghi"])
  with pytest.raises(ValueError, match="prompt 0 is empty"):
    sampler([""])


def test_without_retriever_query_tag_is_an_ordinary_token():
  out = Sampler(_model(), TOK, _config(), doc_format=FMT)(PROMPTS)
  assert out.num_searches.sum() == 0
  assert ((out.tokens == Q_END) & (out.loss_mask == 1)).sum() > 0
  assert (out.loss_mask[:, out.prompt_len:].sum(1) ==
          out.lengths - out.prompt_len).all()


class _Tagged(DictRetriever):
  """DictRetriever whose documents carry its name in their ids."""

  def __init__(self, name):
    super().__init__()
    self.name = name

  def search(self, queries, k):
    return [[dataclasses.replace(d, id=f"{self.name}/{d.id}") for d in docs]
            for docs in super().search(queries, k)]


@pytest.mark.parametrize("mesh_shape", [None, (2, 4)], ids=["one_device", "data2_fsdp4"])
def test_each_row_searches_its_own_corpus(mesh_shape):
  """Eight identical greedy rows, four corpora: every search of row i reads
  corpora[i]'s retriever (also when each device holds its own rows), and a
  plain retriever refuses per-row corpora."""
  cfg = _config()
  names = ["", "a", "b", "c"] * 2
  routed = RoutedRetriever(_Tagged("default"),
                           {n: _Tagged(n) for n in ("a", "b", "c")})
  mesh, model = None, _model()
  if mesh_shape is not None:
    mesh = sharding.make_mesh(*mesh_shape)
    model = sharding.create_sharded(lambda: _model(), mesh)
  out = Sampler(model, TOK, cfg, retriever=routed, doc_format=FMT,
                mesh=mesh)([PROMPTS[0]] * 8, corpora=names)
  ran = 0
  for i, records in enumerate(out.searches):
    for rec in records:
      if rec.ran:
        ran += 1
        assert {d.id.split("/")[0] for d in rec.docs} == {names[i] or "default"}
  assert ran >= 8
  with pytest.raises(ValueError, match="RoutedRetriever"):
    Sampler(_model(), TOK, cfg, retriever=DictRetriever(),
            doc_format=FMT)([PROMPTS[0]], corpora=["a"])
  with pytest.raises(ValueError, match="2 prompts but 1 corpora"):
    Sampler(_model(), TOK, cfg, retriever=routed,
            doc_format=FMT)(PROMPTS[:2], corpora=["a"])
