"""The demo's data assembly (`experiment._synthetic`): practice worlds add
reading practice to the cold start and to pretraining without leaking any of
the demo world's corpus-only facts."""

import re

import jax
import pytest

from configs import r1pp
from rsearch_jax import experiment, sharding
from rsearch_jax.data import synthetic


def _config(tmp_path, practice_worlds):
  c = r1pp.get_config("demo")
  c.workdir = str(tmp_path)
  c.world.update(dict(num_people=20, num_films=10, num_companies=6,
                      num_cities=6, pretrain_repeats=2))
  c.model.update(dict(vocab_size=600, hidden_size=32, intermediate_size=64,
                      num_layers=1))
  c.sampling.max_prompt_len = 128
  c.data.sft_examples = 8
  c.data.practice_worlds = practice_worlds
  return c


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  out = {}
  for n in (0, 2):
    cfg = _config(tmp_path_factory.mktemp(f"p{n}"), n)
    out[n] = (cfg, experiment._synthetic(cfg, mesh))
  return out


def test_practice_questions_join_the_cold_start(built):
  cfg, (_, tok, _, datasets, _, _) = built[2]
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  own = {d.title for d in world.corpus()}
  practice = [synthetic.make_world(synthetic.WorldConfig(
      **{**cfg.world, "seed": cfg.world.seed + i})) for i in (1, 2)]
  practice_names = {d.title for p in practice for d in p.corpus()} - own
  sft = datasets["sft"]
  n_practice = 0
  for prompt, segments in sft:
    question = prompt[prompt.rindex("Question:"):] if "Question:" in prompt else prompt
    if any(name in question for name in practice_names):
      n_practice += 1
      # A practice question never names anything of the demo's world.
      assert not any(name in question for name in own), question
      # And it is answered by reading: it searched, and the answer it gives
      # is in a spliced block.
      blocks = [tok.decode(s) for s, retrieved in segments if retrieved]
      answer = re.search(r"<answer>(.*?)</answer>", segments[-1][0]).group(1)
      assert blocks and any(answer in b for b in blocks), question
  assert n_practice > 2 * len(practice[0].corpus()) // 3
  assert len(sft) == cfg.data.sft_examples + n_practice
  assert len(built[0][1][3]["sft"]) == cfg.data.sft_examples


def test_reading_practice_in_pretraining_leaks_no_corpus_fact(built):
  cfg, (_, _, _, datasets, _, _) = built[2]
  world = synthetic.make_world(synthetic.WorldConfig(**cfg.world))
  rows = datasets["pretrain"]
  assert len(rows) > len(built[0][1][3]["pretrain"])
  sentences = [s for row in rows for s in re.split(r"(?<=\.)\s", row)]
  for fact in world.facts:
    if world.is_internal(fact):
      continue
    pair = (fact.subject, str(fact.object))
    leaked = [s for s in sentences if all(x in s for x in pair)]
    assert not leaked, (fact, leaked[:1])
  # The demo world's internal facts are all still stated.
  text = "\n".join(rows)
  for fact in world.internal:
    assert fact.subject in text
