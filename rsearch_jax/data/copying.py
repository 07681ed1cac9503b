"""Random-token copy examples: a warm-up that teaches a scratch model to copy
from its context before it learns any language.

Reading a retrieved document is in-context copying: the answer is a name that
stands in the document block. A tiny decoder trained from scratch on the
demo's texts does not learn that in the minutes the demo has: everything in
its pretraining text can also be predicted from memory, so nothing forces an
induction circuit (`benchmarks/copying.py`, BENCHMARKS.md). A short stage on
these examples does: each is `noise, x, SEP, x` with random tokens, the
second `x` (after its first token) the only target, so memory cannot help
and copying is the only way down. With `ModelConfig.smear_keys` the demo's
decoder learns it in about 150 steps, and the circuit carries over to names
in documents.

An example is in the cold start's (prompt, segments) form, so a stage of kind
"sft" trains on it with the loss on the copy alone:
`(noise + x + [sep, x[0]], [(x[1:], False)])`. The copy's first token stays
in the prompt: nothing in the context says where `x` began, so it cannot
be predicted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CopyExample = tuple[list[int], list[tuple[list[int], bool]]]


def copy_examples(num: int, ids: Sequence[int], sep: int, *, width: int = 64,
                  min_copy: int = 6, max_copy: int = 24,
                  seed: int = 0) -> list[CopyExample]:
  """`num` examples `noise, x, sep | x` of at most `width` tokens.

  The noise has a random length too, so neither the copy's offset nor its
  absolute position tells where `x` starts: only its content does.

  Args:
    num: how many examples.
    ids: the token ids to draw noise and `x` from (uniformly, with
      replacement), e.g. a tokenizer's ordinary pieces.
    sep: the token between the two copies.
    width: the longest example.
    min_copy / max_copy: bounds of `x`'s length (inclusive; min_copy >= 2).
    seed: everything follows it.

  Returns:
    [(prompt ids = noise + x + [sep, x[0]], [(x[1:], False)])]: the target
    segment is the rest of the copy, trained on; the prompt is not.

  Raises:
    ValueError: `ids` empty, or lengths that do not fit in `width`.
  """
  ids = np.asarray(ids, np.int64)
  if ids.ndim != 1 or ids.size == 0:
    raise ValueError("copy_examples: ids should be a non-empty list of token ids")
  if not 2 <= min_copy <= max_copy:
    raise ValueError(f"copy_examples: need 2 <= min_copy={min_copy} <= "
                     f"max_copy={max_copy}")
  if 2 * max_copy + 1 > width:
    raise ValueError(f"copy_examples: width={width} cannot hold two copies of "
                     f"max_copy={max_copy} tokens and the separator")
  rng = np.random.default_rng([seed, 17])
  out = []
  for _ in range(num):
    n = int(rng.integers(min_copy, max_copy + 1))
    noise = ids[rng.integers(0, ids.size, int(rng.integers(0, width - 2 * n)))]
    x = ids[rng.integers(0, ids.size, n)].tolist()
    out.append((noise.tolist() + x + [int(sep), x[0]], [(x[1:], False)]))
  return out
