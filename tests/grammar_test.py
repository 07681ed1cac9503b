"""The tag grammar: sampled rollouts obey it, the sampler's log-probs are
those of the constrained distribution (against a teacher-forced pass masked
by a plain-Python state machine), and the RL loss scores tokens the same way."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsearch_jax import builders
from rsearch_jax.rl import _losses as losses
from rsearch_jax.sampling import (DocumentFormat, Sampler, SamplingConfig,
                                  grammar_for)
from rsearch_jax.testing import CharTokenizer, DictRetriever, tiny_model

jax.config.update("jax_default_matmul_precision", "highest")

TOK = CharTokenizer()
LEAVES = [("<answer>", "</answer>"), ("<external>", "</external>"),
          ("<internal>", "</internal>")]
GRAMMAR = grammar_for(TOK, LEAVES)
OPEN = {TOK.tag_id(o): k for k, (o, _) in enumerate(LEAVES)}
CLOSE = {TOK.tag_id(c): k for k, (_, c) in enumerate(LEAVES)}
FMT = DocumentFormat(query_begin="<external>", query_end="</external>",
                     docs_begin="<document>", docs_end="</document>",
                     top_k=2, doc_tokens=10)
PROMPTS = ["who is x?", "where was the director born?", "a", "when", "b c d e",
           "q", "the year?", "name it"]
# Favouring every leaf tag makes an unconstrained random model mix them up.
FAVOUR = tuple(OPEN) + tuple(CLOSE)


def _sample(grammar, seed=0, temperature=1.0):
  model = tiny_model(TOK.vocab_size, seed=4, favour=FAVOUR, strength=2.5)
  cfg = SamplingConfig(max_prompt_len=32, max_len=200, max_new_tokens=60,
                       temperature=temperature, max_searches=3,
                       doc_block_len=40)
  sampler = Sampler(model, TOK, cfg, retriever=DictRetriever(), doc_format=FMT,
                    stop_tags=("</answer>",), grammar=grammar)
  return model, sampler(PROMPTS * 2, seed=seed)


def reference_bans(tokens, sampled):
  """Plain-Python state machine: bans[t] = the controlled ids banned from
  the distribution token t was drawn from, and whether a violation occurred."""
  bans, violations = [], 0
  for row, mask in zip(tokens.tolist(), sampled.tolist()):
    state, row_bans = None, []
    for tok, m in zip(row, mask):
      banned = set()
      for tid, k in OPEN.items():
        if state is not None:
          banned.add(tid)
      for tid, k in CLOSE.items():
        if state != k:
          banned.add(tid)
      row_bans.append(banned)
      if m:
        if tok in banned:
          violations += 1
        if tok in OPEN:
          state = OPEN[tok]
        elif tok in CLOSE:
          state = None
    bans.append(row_bans)
  return bans, violations


def test_unconstrained_sampler_breaks_the_grammar_constrained_never_does():
  _, free = _sample(None)
  assert reference_bans(free.tokens, free.loss_mask)[1] > 0, (
      "the test model was meant to mix the tags up without the grammar")
  for seed in range(3):
    _, out = _sample(GRAMMAR, seed=seed)
    assert reference_bans(out.tokens, out.loss_mask)[1] == 0
    # Leaf tags were sampled, and searches still ran.
    assert np.isin(out.tokens[out.loss_mask == 1], FAVOUR).sum() > 20
    assert out.num_searches.sum() > 0


def _masked_reference_logprobs(model, out, temperature):
  """Teacher-forced log-probs with the reference state machine's bans."""
  logits, _ = model(jnp.asarray(out.tokens), jnp.asarray(out.positions))
  logits = np.array(logits[:, :-1], np.float64) / temperature
  bans, _ = reference_bans(out.tokens, out.loss_mask)
  for b, row in enumerate(bans):
    for t in range(1, len(row)):
      for tid in row[t]:
        logits[b, t - 1, tid] = -np.inf
  logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  targets = out.tokens[:, 1:]
  return np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_are_the_constrained_distributions(temperature):
  model, out = _sample(GRAMMAR, seed=1, temperature=temperature)
  ref = _masked_reference_logprobs(model, out, temperature)
  sampled = out.loss_mask[:, 1:] == 1
  assert sampled.sum() > 200
  np.testing.assert_allclose(out.logprobs[:, 1:][sampled], ref[sampled],
                             atol=1e-4)
  # Somewhere the ban mattered: the unconstrained log-prob differs.
  logits, _ = model(jnp.asarray(out.tokens), jnp.asarray(out.positions))
  free = np.asarray(jax.nn.log_softmax(logits[:, :-1] / temperature, -1))
  free = np.take_along_axis(free, out.tokens[:, 1:, None], -1)[..., 0]
  assert np.abs(free[sampled] - ref[sampled]).max() > 1e-2


@pytest.mark.parametrize("chunk", [0, 48])
def test_learner_logprobs_equal_the_samplers_under_the_grammar(chunk):
  model, out = _sample(GRAMMAR, seed=2)
  _, _, hidden = model(jnp.asarray(out.tokens), jnp.asarray(out.positions),
                       return_hidden=True, last_only=True)
  mask = jnp.asarray(out.loss_mask)
  lp, ent = losses.token_logprobs_from_hidden(
      hidden, model.logits, jnp.asarray(out.tokens), 1.0, chunk=chunk,
      entropy_mask=mask, grammar=GRAMMAR, sampled=mask)
  on = out.loss_mask == 1
  np.testing.assert_allclose(np.asarray(lp)[on], out.logprobs[on], atol=1e-4)
  assert np.isfinite(np.asarray(ent)).all()


def test_banned_matches_the_state_machine_with_documents_in_between():
  # Random rows that obey the grammar on their sampled tokens; unsampled
  # slots (documents) hold any tag, which must not move the state.
  rng = np.random.default_rng(0)
  letter = TOK.encode("a")[0]
  tokens = np.zeros((6, 60), np.int32)
  sampled = (rng.random((6, 60)) < 0.7).astype(np.int32)
  for b in range(6):
    state = None
    for t in range(60):
      if not sampled[b, t]:
        tokens[b, t] = rng.choice(FAVOUR + (letter,))
        continue
      ok = [letter] + ([o for o in OPEN] if state is None else
                       [c for c, k in CLOSE.items() if k == state])
      tokens[b, t] = rng.choice(ok)
      state = (OPEN.get(int(tokens[b, t]), state) if state is None
               else (None if int(tokens[b, t]) in CLOSE else state))
  ref, violations = reference_bans(tokens, sampled)
  assert violations == 0
  got = np.asarray(GRAMMAR.banned(jnp.asarray(tokens), jnp.asarray(sampled)))
  for b in range(6):
    for t in range(60):
      have = {tid for j, tid in enumerate(GRAMMAR.ids) if got[b, t, j]}
      assert have == ref[b][t], (b, t)


def test_grammar_needs_single_token_tags():
  class Split(CharTokenizer):
    def tag_token_ids(self, tag):
      return self.encode(tag.replace("<", "(").replace(">", ")"))

  with pytest.raises(ValueError, match="'<external>' is 10 tokens.*add_tags"):
    grammar_for(Split(), [("<external>", "</external>")])
  # The method's leaves: answer, query, and (r1pp) internal.
  assert len(builders.tag_grammar(TOK, "r1").pairs) == 2
  assert builders.tag_grammar(TOK, "r1pp") == GRAMMAR
