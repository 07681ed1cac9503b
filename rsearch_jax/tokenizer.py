"""Tokenizers: one interface over SentencePiece and imported byte-level BPE.

Search-augmented reasoning marks its structure with tags (`<think>`,
`<|begin_of_query|>`, `<answer>`, ...). The rollout and reward code needs each
tag to be a single token id, so it can stop generation on `<|end_of_query|>`
or find `<answer>` in a token stream without re-decoding. Every tokenizer here
therefore exposes the tags as ids, and decodes text with tags in it back to
exactly the same string.

Main entry points:
  TAGS                                 the 14 structural tags, in a fixed order.
  Tokenizer                            the abstract interface.
  SentencePieceTokenizer(path)         a trained `.model`;
  SentencePieceTokenizer.train(...)    trains one (tags are pieces) for the
                                       synthetic demo task.
  BPETokenizer.from_gguf(path)         the tokenizer of an imported GGUF model.
  BPETokenizer.from_tokenizer_json(p)  an HF `tokenizer.json` (file or folder).
  BPETokenizer.add_tags()              makes each tag one (new) id; the caller
                                       resizes the model embedding.
  BPETokenizer.save(path)              writes `tokenizer.json` (+ special ids).
  load_tokenizer(path)                 dispatch on `.model`, `.gguf`,
                                       `tokenizer.json` or a folder holding it.
"""

from __future__ import annotations

import abc
import io
import json
import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import gguf
import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

TAGS: tuple[str, ...] = (
    "<|begin_of_query|>",
    "<|end_of_query|>",
    "<|begin_of_documents|>",
    "<|end_of_documents|>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<internal>",
    "</internal>",
    "<external>",
    "</external>",
    "<document>",
    "</document>",
)

PathLike = str | os.PathLike

# HF convention: the special-token names live next to `tokenizer.json` in
# `tokenizer_config.json`, since `tokenizer.json` has no field for them.
_CONFIG_NAME = "tokenizer_config.json"
_TOKENIZER_JSON = "tokenizer.json"


class Tokenizer(abc.ABC):
  """Text <-> ids, with the structural tags as single ids.

  Subclasses guarantee `decode(encode(s)) == s` for ordinary strings with tags
  embedded, and that `pad_id` is never None (padding is masked, but batches
  still need a valid id to fill with).
  """

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids the model's embedding must cover (max id + 1)."""

  @property
  @abc.abstractmethod
  def bos_id(self) -> int | None:
    """Beginning-of-sequence id, or None if the tokenizer has none."""

  @property
  @abc.abstractmethod
  def eos_id(self) -> int | None:
    """End-of-sequence id, or None if the tokenizer has none."""

  @property
  @abc.abstractmethod
  def pad_id(self) -> int:
    """Id used to fill padded positions; never None."""

  @abc.abstractmethod
  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text`, with `bos_id` first when `add_bos` is set.

    Raises:
      ValueError: `add_bos` is set but the tokenizer has no BOS.
    """

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; bos/eos/pad ids decode to nothing."""

  @property
  @abc.abstractmethod
  def tag_ids(self) -> dict[str, int]:
    """Each tag of `TAGS` that is a single, always-matched token -> its id."""

  def tag_id(self, tag: str) -> int:
    """The single id of `tag`.

    Raises:
      KeyError: `tag` is not a single token of this tokenizer.
    """
    ids = self.tag_ids
    if tag not in ids:
      raise KeyError(
          f"tag {tag!r} is not a single token of this {type(self).__name__}; "
          f"available tags: {sorted(ids)}"
      )
    return ids[tag]

  def tag_token_ids(self, tag: str) -> list[int]:
    """The ids `tag` encodes to: one id if it is a tag token, else several.

    The multi-id form lets callers match a tag as a suffix of a token stream
    even for a tokenizer that was never given the tag as a piece.
    """
    ids = self.tag_ids
    if tag in ids:
      return [ids[tag]]
    return self.encode(tag)

  def _with_bos(self, ids: list[int], add_bos: bool) -> list[int]:
    if not add_bos:
      return ids
    if self.bos_id is None:
      raise ValueError(
          f"add_bos=True, but this {type(self).__name__} has no BOS"
      )
    return [self.bos_id] + ids


# ---------------------------------------------------------------------------
# SentencePiece.


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model`, normally one trained by `train` for the demo.

  The pad id is the model's `<pad>` piece (id 0 for models from `train`); a
  model without one pads with EOS, or failing that with UNK.
  """

  # SentencePiece reads U+2581 in input as its whitespace marker and decodes it
  # as a space. Encoding that character as its UTF-8 bytes instead keeps it.
  _META = "\u2581"

  def __init__(self, model_path: PathLike):
    path = pathlib.Path(model_path)
    if not path.is_file():
      raise FileNotFoundError(f"SentencePiece model not found: {path}")
    self._path = path
    self._sp = spm.SentencePieceProcessor(model_file=str(path))
    self._meta_ids = self._byte_ids(self._META)
    self._tag_ids = {}
    for tag in TAGS:
      piece_id = self._sp.piece_to_id(tag)
      if piece_id != self._sp.unk_id() and self._sp.encode(tag) == [piece_id]:
        self._tag_ids[tag] = piece_id

  @classmethod
  def train(
      cls,
      texts: Iterable[str],
      vocab_size: int,
      out_dir: PathLike,
      name: str = "spm",
      whole_words: Sequence[str] = (),
  ) -> SentencePieceTokenizer:
    """Trains a BPE SentencePiece model on `texts`; writes out_dir/name.model.

    Ids 0-3 are `<pad>`, `<unk>`, `<s>`, `</s>`; the 14 tags follow as
    user-defined pieces (matched anywhere in text), then the 256 byte pieces.
    Normalization is off (identity, no whitespace cleanup, no dummy prefix) so
    any string round-trips. Training is single-threaded and so deterministic:
    the same texts give the same model file.

    Args:
      texts: training documents; each may contain newlines.
      vocab_size: target size; an upper bound, since a small or repetitive
        corpus may not support as many pieces (`hard_vocab_limit=False`).
      out_dir: folder to write the model into (created if missing).
      name: the model file's stem.
      whole_words: words made single pieces (after the tags), matched anywhere
        in text like the tags. A word then has one id wherever it stands: a
        BPE piece otherwise differs with and without its leading space
        ("Naba" after a tag, "▁Naba" after a word), so copying a name from a
        question into a query or from a document into an answer would need a
        learned mapping per name. The synthetic world passes its names
        when `data.whole_word_names` is set.

    Returns:
      The trained tokenizer, loaded from the written file.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=proto,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        user_defined_symbols=list(TAGS) + [w for w in whole_words
                                           if w not in TAGS],
        byte_fallback=True,
        # Rare characters go to bytes rather than to their own pieces.
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        # Documents with retrieved passages are long; the default (4192 bytes)
        # would silently drop them from training.
        max_sentence_length=1 << 16,
        num_threads=1,
        minloglevel=2,
    )
    path = out / f"{name}.model"
    path.write_bytes(proto.getvalue())
    return cls(path)

  @property
  def model_path(self) -> pathlib.Path:
    return self._path

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def bos_id(self) -> int | None:
    return _none_if_negative(self._sp.bos_id())

  @property
  def eos_id(self) -> int | None:
    return _none_if_negative(self._sp.eos_id())

  @property
  def pad_id(self) -> int:
    for candidate in (self._sp.pad_id(), self._sp.eos_id()):
      if candidate >= 0:
        return candidate
    return self._sp.unk_id()

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    parts = text.split(self._META)
    ids = list(self._sp.encode(parts[0]))
    for part in parts[1:]:
      ids += self._meta_ids
      ids += self._sp.encode(part)
    return self._with_bos(ids, add_bos)

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])

  @property
  def tag_ids(self) -> dict[str, int]:
    return dict(self._tag_ids)

  def text_piece_ids(self) -> list[int]:
    """The ids of the ordinary pieces: not control (BOS, EOS, pad), unknown,
    unused or byte-fallback pieces, nor the tags."""
    sp = self._sp
    return [i for i in range(sp.get_piece_size())
            if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)
                    or sp.is_unused(i) or sp.id_to_piece(i) in TAGS)]

  def _byte_ids(self, text: str) -> list[int]:
    ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in text.encode("utf-8")]
    if any(i == self._sp.unk_id() for i in ids):
      # No byte pieces (a model trained without byte_fallback): the marker
      # character cannot be kept, so let SentencePiece map it as it would.
      return list(self._sp.encode(" "))
    return ids


def _none_if_negative(i: int) -> int | None:
  return None if i < 0 else i


# ---------------------------------------------------------------------------
# Byte-level BPE (imported models).

# llama.cpp's `tokenizer.ggml.pre` names whose split is GPT-2's regex alone.
# A file without the key is read as "gpt2", as transformers does (llama.cpp's
# own fallback, "default", is a different split we do not implement).
_GPT2_PRE = frozenset({"gpt2", "mpt", "olmo", "jais"})
# Names whose split first isolates every numeric character (`\p{N}`), then
# applies GPT-2's regex: llama.cpp's STARCODER family, to which SmolLM belongs.
# SmolLM's own tokenizer.json does the same (Digits(individual_digits=True)
# before ByteLevel).
_DIGITS_PRE = frozenset({"smollm", "starcoder", "refact", "codeshell"})

# GGUF token types (llama.cpp's llama_token_type).
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4


class BPETokenizer(Tokenizer):
  """A `tokenizers.Tokenizer` plus the special ids its JSON does not carry.

  Use `from_gguf` or `from_tokenizer_json` rather than the constructor.

  The pad id is the file's padding token when it names one (SmolLM2's GGUF
  says `<|im_end|>`, id 2, which is also its EOS); otherwise EOS; otherwise a
  dedicated `<|pad|>` special token is added (growing `vocab_size` by one).
  """

  def __init__(
      self,
      tokenizer: Any,
      bos_id: int | None = None,
      eos_id: int | None = None,
      pad_id: int | None = None,
      unk_id: int | None = None,
  ):
    """Wraps a `tokenizers.Tokenizer`.

    Args:
      tokenizer: the backend; its post-processor is never applied (`encode`
        adds BOS itself), so a template that adds BOS/EOS is harmless.
      bos_id: beginning-of-sequence id, if any.
      eos_id: end-of-sequence id, if any.
      pad_id: padding id; defaults to `eos_id`, else a new `<|pad|>` token.
      unk_id: unknown-token id, if any (informational for byte-level BPE).
    """
    self._tok = tokenizer
    self._bos_id = bos_id
    self._eos_id = eos_id
    self._unk_id = unk_id
    if pad_id is None:
      pad_id = eos_id
    if pad_id is None:
      pad_id = self._add_special(["<|pad|>"])["<|pad|>"]
    self._pad_id = pad_id

  # --- Construction. ---

  @classmethod
  def from_tokenizer_json(cls, path: PathLike) -> BPETokenizer:
    """Loads an HF `tokenizer.json` (a file, or a folder holding one).

    Special ids come from a `tokenizer_config.json` beside it (the HF
    convention, and what `save` writes) when there is one: its `bos_token`,
    `eos_token`, `pad_token` and `unk_token` entries, as strings or
    `{"content": ...}` objects.

    Raises:
      FileNotFoundError: no such file (or no tokenizer.json in the folder).
      ValueError: the file is not a valid tokenizer.json.
    """
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / _TOKENIZER_JSON
    if not path.is_file():
      raise FileNotFoundError(f"tokenizer.json not found: {path}")
    try:
      tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception.
      raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from e
    ids = {}
    config_path = path.parent / _CONFIG_NAME
    if config_path.is_file():
      config = json.loads(config_path.read_text(encoding="utf-8"))
      for key in ("bos", "eos", "pad", "unk"):
        ids[f"{key}_id"] = _config_token_id(tok, config.get(f"{key}_token"))
    if ids.get("pad_id") is None and tok.padding:
      ids["pad_id"] = tok.padding.get("pad_id")
    return cls(tok, **ids)

  @classmethod
  def from_gguf(cls, path: PathLike) -> BPETokenizer:
    """Builds the tokenizer stored in a GGUF file's metadata.

    Only `tokenizer.ggml.model == "gpt2"` (byte-level BPE) is supported, with
    the pre-tokenizers named in `_GPT2_PRE` and `_DIGITS_PRE`. Control tokens
    (token type 3) become special tokens, user-defined ones (type 4) added
    tokens, so both are matched whole in text. Tensors are memory-mapped by
    `gguf.GGUFReader` and never read.

    Note: for `pre == "smollm"` the split isolates digits first, as llama.cpp
    and SmolLM's original tokenizer.json do. transformers' GGUF loader omits
    that step, so on whitespace directly before a digit ("x  2", "\\n\\n1.")
    its ids differ from ours (and from the model's training data).

    Raises:
      FileNotFoundError: no such file.
      ValueError: unsupported tokenizer model or pre-tokenizer, or missing
        tokenizer metadata.
    """
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"GGUF file not found: {path}")
    meta = _read_gguf_tokenizer_metadata(path)
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
      raise ValueError(
          f"{path}: unsupported tokenizer.ggml.model {model!r}; only 'gpt2' "
          "(byte-level BPE) is supported"
      )
    pre = meta.get("tokenizer.ggml.pre", "gpt2")
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
      if key not in meta:
        raise ValueError(f"{path}: GGUF metadata has no {key}")
    tok = _build_byte_level_bpe(
        path,
        tokens=meta["tokenizer.ggml.tokens"],
        merges=meta["tokenizer.ggml.merges"],
        token_types=meta.get("tokenizer.ggml.token_type"),
        pre=pre,
    )
    return cls(
        tok,
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_id=meta.get("tokenizer.ggml.padding_token_id"),
        unk_id=meta.get("tokenizer.ggml.unknown_token_id"),
    )

  # --- Mutation and persistence. ---

  def add_tags(self, tags: Sequence[str] = TAGS) -> int:
    """Makes every tag a special token: one id, matched whole, kept on decode.

    A tag already in the vocabulary keeps its id. The model's embedding must
    then grow to `vocab_size`; that is the caller's job.

    Returns:
      How many new ids were added (how much `vocab_size` grew).
    """
    before = self.vocab_size
    self._add_special(list(tags))
    return self.vocab_size - before

  def save(self, path: PathLike) -> pathlib.Path:
    """Writes `tokenizer.json`, and its special tokens beside it.

    Args:
      path: a folder (created if missing; the file is path/tokenizer.json) or
        a file path ending in `.json`. `tokenizer_config.json` goes in the
        same folder, where `from_tokenizer_json` looks for it.

    Returns:
      The path of the written tokenizer JSON.
    """
    path = pathlib.Path(path)
    if path.suffix != ".json":
      path = path / _TOKENIZER_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    self._tok.save(str(path))
    config = {}
    for key, token_id in (("bos", self._bos_id), ("eos", self._eos_id),
                          ("pad", self._pad_id), ("unk", self._unk_id)):
      config[f"{key}_token"] = (
          None if token_id is None else self._tok.id_to_token(token_id)
      )
    (path.parent / _CONFIG_NAME).write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return path

  # --- The Tokenizer interface. ---

  @property
  def backend(self) -> Any:
    """The underlying `tokenizers.Tokenizer`."""
    return self._tok

  @property
  def vocab_size(self) -> int:
    vocab = self._tok.get_vocab(with_added_tokens=True)
    # Duplicate token strings in a GGUF leave holes in the id range, so the
    # count alone can undershoot the embedding size.
    return max(len(vocab), max(vocab.values(), default=-1) + 1)

  @property
  def bos_id(self) -> int | None:
    return self._bos_id

  @property
  def eos_id(self) -> int | None:
    return self._eos_id

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return self._with_bos(list(ids), add_bos)

  def decode(self, ids: Sequence[int]) -> str:
    # Only bos/eos/pad are dropped. `skip_special_tokens` is not used: the tags
    # are special tokens too and must survive, and keeping the model's other
    # control tokens (`<file_sep>`, ...) keeps decoding lossless.
    skip = {
        i for i in (self._bos_id, self._eos_id, self._pad_id)
        if i is not None
    }
    kept = [int(i) for i in ids if int(i) not in skip]
    return self._tok.decode(kept, skip_special_tokens=False)

  @property
  def tag_ids(self) -> dict[str, int]:
    # Only added tokens are matched whole inside running text; a tag that is
    # merely a BPE vocabulary entry may be split depending on its context.
    added = {
        t.content: i
        for i, t in self._tok.get_added_tokens_decoder().items()
    }
    return {tag: added[tag] for tag in TAGS if tag in added}

  # --- Helpers. ---

  def _add_special(self, contents: Sequence[str]) -> dict[str, int]:
    self._tok.add_special_tokens([
        tokenizers.AddedToken(c, special=True, normalized=False)
        for c in contents
    ])
    return {c: self._tok.token_to_id(c) for c in contents}


def _config_token_id(tok: Any, entry: Any) -> int | None:
  """The id of a `tokenizer_config.json` special-token entry, if resolvable."""
  if isinstance(entry, Mapping):
    entry = entry.get("content")
  if not isinstance(entry, str):
    return None
  return tok.token_to_id(entry)


def _read_gguf_tokenizer_metadata(path: pathlib.Path) -> dict[str, Any]:
  """The `tokenizer.ggml.*` fields of a GGUF file, as Python values."""
  # GGUFReader memory-maps the file and only parses headers; tensor data is
  # never touched here.
  reader = gguf.GGUFReader(str(path), "r")
  # `contents()` copies each value out of the map, so nothing returned keeps
  # the file mapped once `reader` goes away.
  return {
      key: field.contents()
      for key, field in reader.fields.items()
      if key.startswith("tokenizer.ggml.")
  }


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table for byte-level BPE."""
  printable = (list(range(ord("!"), ord("~") + 1))
               + list(range(ord("\u00a1"), ord("\u00ac") + 1))
               + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
  table = {b: chr(b) for b in printable}
  extra = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def _build_byte_level_bpe(
    path: pathlib.Path,
    tokens: Sequence[str],
    merges: Sequence[str],
    token_types: Sequence[int] | None,
    pre: str,
) -> Any:
  """A byte-level BPE `tokenizers.Tokenizer` from GGUF vocabulary data."""
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _GPT2_PRE:
    pre_tokenizer = byte_level
  elif pre in _DIGITS_PRE:
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]
    )
  else:
    raise ValueError(
        f"{path}: unsupported tokenizer.ggml.pre {pre!r}; supported: "
        f"{sorted(_GPT2_PRE | _DIGITS_PRE)}"
    )

  types = list(token_types) if token_types is not None else [1] * len(tokens)
  spelling = _bytes_to_unicode()
  alphabet = set(spelling.values())
  vocab: dict[str, int] = {}
  control, user_defined = [], []
  for i, (token, token_type) in enumerate(zip(tokens, types)):
    if token_type == _TOKEN_TYPE_CONTROL:
      control.append(token)
    elif token_type == _TOKEN_TYPE_USER_DEFINED:
      user_defined.append(token)
    elif not set(token) <= alphabet:
      # Some converters store a normal token as raw text instead of in the
      # byte alphabet; BPE can only reach it through its byte spelling.
      token = "".join(spelling[b] for b in token.encode("utf-8"))
    # Control/user tokens keep their raw text as key, so the added tokens
    # registered below find (and reuse) their ids.
    vocab.setdefault(token, i)

  pairs = []
  for merge in merges:
    left, sep, right = merge.partition(" ")
    if not sep or not left or not right:
      raise ValueError(f"{path}: malformed merge {merge!r}")
    pairs.append((left, right))

  tok = tokenizers.Tokenizer(
      models.BPE(
          vocab=vocab,
          merges=pairs,
          dropout=None,
          continuing_subword_prefix="",
          end_of_word_suffix="",
          fuse_unk=False,
          byte_fallback=False,
      )
  )
  tok.pre_tokenizer = pre_tokenizer
  tok.decoder = decoders.ByteLevel()
  if control:
    tok.add_special_tokens([
        tokenizers.AddedToken(t, special=True, normalized=False)
        for t in control
    ])
  if user_defined:
    tok.add_tokens([
        tokenizers.AddedToken(t, special=False, normalized=False)
        for t in user_defined
    ])
  return tok


# ---------------------------------------------------------------------------
# Factory.


def load_tokenizer(path: PathLike) -> Tokenizer:
  """Loads the tokenizer at `path`, choosing the class from the file.

  `.model` -> SentencePieceTokenizer; `.gguf` -> BPETokenizer.from_gguf;
  a `.json` file (a tokenizer.json) or a folder holding `tokenizer.json` ->
  BPETokenizer.from_tokenizer_json.

  Raises:
    FileNotFoundError: a recognised file type, or a suffix-less path, that
      does not exist.
    ValueError: anything else (unknown suffix, folder without tokenizer.json).
  """
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix == ".model":
    return SentencePieceTokenizer(path)
  if suffix == ".gguf":
    return BPETokenizer.from_gguf(path)
  if suffix == ".json":
    return BPETokenizer.from_tokenizer_json(path)
  if path.is_dir():
    if (path / _TOKENIZER_JSON).is_file():
      return BPETokenizer.from_tokenizer_json(path)
    raise ValueError(f"no {_TOKENIZER_JSON} in folder {path}")
  if not path.exists() and not suffix:
    raise FileNotFoundError(f"tokenizer path not found: {path}")
  raise ValueError(
      f"cannot tell the tokenizer type of {path}: expected a .model, .gguf or "
      "tokenizer.json file, or a folder holding tokenizer.json"
  )
