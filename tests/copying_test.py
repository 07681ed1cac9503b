"""The copy warm-up's examples (`rsearch_jax.data.copying`)."""

import numpy as np
import pytest

from rsearch_jax.data import copying
from rsearch_jax.rl._rollouts import encode_example

IDS = list(range(10, 60))
SEP = 3


def _split(example):
  """(noise, x, sep) recovered from an example's prompt and target."""
  prompt, [(target, retrieved)] = example
  assert retrieved is False
  n = len(target) + 1
  return prompt[:-n - 2], prompt[-n - 2:-2], prompt[-2], prompt[-1], target


def test_each_example_is_noise_then_x_then_its_copy():
  examples = copying.copy_examples(300, IDS, SEP, width=40, min_copy=3,
                                   max_copy=12, seed=5)
  assert len(examples) == 300
  noise_lengths, copy_lengths = set(), set()
  for ex in examples:
    noise, x, sep, first, target = _split(ex)
    assert sep == SEP
    assert [first] + target == x  # the copy, its first token in the prompt
    assert set(noise + x) <= set(IDS)
    assert 3 <= len(x) <= 12
    assert len(noise) + 2 * len(x) + 1 <= 40
    noise_lengths.add(len(noise))
    copy_lengths.add(len(x))
  # Neither the copy's length nor where it starts is fixed: only content
  # tells where x begins.
  assert len(copy_lengths) == 10
  assert len(noise_lengths) > 15


def test_loss_mask_covers_the_copy_after_its_first_token_only():
  ex = copying.copy_examples(1, IDS, SEP, seed=1)[0]
  ids, mask = encode_example(None, *ex)
  noise, x, _, _, _ = _split(ex)
  start = len(noise) + len(x) + 2
  assert ids[start:] == x[1:]
  assert mask == [0] * start + [1] * (len(x) - 1)


def test_tokens_are_uniform_over_the_given_ids():
  examples = copying.copy_examples(400, IDS, SEP, seed=2)
  tokens = np.concatenate([np.asarray(p[:-2]) for p, _ in examples])
  counts = np.bincount(tokens, minlength=60)[10:60]
  expected = len(tokens) / len(IDS)
  # Chi-square with 49 degrees of freedom: 99.9th percentile is about 86.
  assert ((counts - expected) ** 2 / expected).sum() < 86


def test_seeded():
  a = copying.copy_examples(20, IDS, SEP, seed=7)
  assert a == copying.copy_examples(20, IDS, SEP, seed=7)
  assert a != copying.copy_examples(20, IDS, SEP, seed=8)


@pytest.mark.parametrize("kwargs,message", [
    (dict(ids=[]), "non-empty"),
    (dict(min_copy=1), "2 <= min_copy=1"),
    (dict(min_copy=9, max_copy=8), "min_copy=9 <= max_copy=8"),
    (dict(width=20, max_copy=10), "width=20 cannot hold"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
  args = dict(ids=IDS, width=64, min_copy=6, max_copy=24)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    copying.copy_examples(3, args.pop("ids"), SEP, **args)
