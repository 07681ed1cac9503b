"""Tests for rsearch_jax.tokenizer: SentencePiece, GGUF import, tags."""

import pathlib
import random
import re

import pytest

from rsearch_jax import tokenizer as tok_lib
from rsearch_jax.tokenizer import TAGS

# Strings that must round-trip exactly through any of our tokenizers.
ROUND_TRIP = [
    "<think>Who directed X?</think><|begin_of_query|>director of X"
    "<|end_of_query|>",
    "<|begin_of_documents|><document>Doc 1</document>\n"
    "<document>Doc 2</document><|end_of_documents|>",
    "<answer>Paris</answer>",
    "a<think>b</think>c",
    "line one\nline two\n\n\nline five\n",
    "  two leading spaces,   runs   of spaces, trailing  ",
    "\ttabs\tand\r\nCRLF",
    "café, naïve — 中文 — 😀🚀",
    "<internal>é</internal><external>中文 😀</external>",
    "U+2581 itself: \u2581 and \u2581\u2581x",
    "",
    " ",
    "\n",
]


def _facts(n: int, seed: int = 0) -> list[str]:
  """Templated search-and-answer episodes, like the synthetic demo task."""
  rng = random.Random(seed)
  people = ["Alice Moreau", "Bob Chen", "Carla Díaz", "Dmitri Ivan", "Eun-ji"]
  cities = ["Paris", "Rome", "Lima", "Oslo", "Kyoto", "São Paulo"]
  jobs = ["directed", "wrote", "produced", "scored"]
  films = ["Blue Harbor", "The Quiet Year", "Nine Lanterns", "Glass River"]
  texts = []
  for i in range(n):
    who, city = rng.choice(people), rng.choice(cities)
    job, film = rng.choice(jobs), rng.choice(films)
    texts.append(
        f"<think>Who {job} {film}?</think>"
        f"<|begin_of_query|>{film} {job} by<|end_of_query|>\n"
        "<|begin_of_documents|>"
        f"<document>{film} ({1950 + i % 70}) was {job} by {who}.</document>"
        f"<document>{who} was born in {city}.</document>"
        "<|end_of_documents|>\n"
        f"<internal>{who}</internal>  <external>{city}</external>\n"
        f"<answer>{who}</answer>"
    )
  return texts


# ---------------------------------------------------------------------------
# SentencePiece.


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory) -> tok_lib.SentencePieceTokenizer:
  out = tmp_path_factory.mktemp("spm")
  return tok_lib.SentencePieceTokenizer.train(_facts(400), 600, out)


def test_tags_constant():
  assert len(TAGS) == 14 and len(set(TAGS)) == 14
  assert TAGS[0] == "<|begin_of_query|>" and TAGS[-1] == "</document>"


def test_spm_writes_model_and_special_ids(spm_tok):
  assert spm_tok.model_path.name == "spm.model"
  assert spm_tok.model_path.is_file()
  assert (spm_tok.pad_id, spm_tok.bos_id, spm_tok.eos_id) == (0, 2, 3)
  assert 300 < spm_tok.vocab_size <= 600


def test_spm_each_tag_is_one_id(spm_tok):
  assert set(spm_tok.tag_ids) == set(TAGS)
  assert len(set(spm_tok.tag_ids.values())) == len(TAGS)
  for tag in TAGS:
    tag_id = spm_tok.tag_id(tag)
    assert spm_tok.encode(tag) == [tag_id]
    assert spm_tok.tag_token_ids(tag) == [tag_id]
    # Matched inside running text, with no spaces around it.
    ids = spm_tok.encode(f"a{tag}b")
    assert ids.count(tag_id) == 1
    assert ids == spm_tok.encode("a") + [tag_id] + spm_tok.encode("b")


def test_spm_text_piece_ids_leave_out_specials_bytes_and_tags(spm_tok):
  ids = spm_tok.text_piece_ids()
  assert len(set(ids)) == len(ids)
  left_out = set(range(spm_tok.vocab_size)) - set(ids)
  assert {spm_tok.pad_id, spm_tok.bos_id, spm_tok.eos_id, spm_tok.unk_id,
          *spm_tok.tag_ids.values()} <= left_out
  # The 256 byte-fallback pieces are left out: each decodes alone to at most
  # one byte, and together with the specials and tags they are all of them.
  assert len(left_out) == 4 + len(TAGS) + 256
  # Every piece of ordinary text is in.
  text = "Alice Moreau was born in Paris. Glass River was produced by Bob Chen."
  assert set(spm_tok.encode(text)) <= set(ids)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_spm_round_trip(spm_tok, text):
  assert spm_tok.decode(spm_tok.encode(text)) == text


def test_spm_bos_and_specials_skipped_on_decode(spm_tok):
  ids = spm_tok.encode("hi there", add_bos=True)
  assert ids[0] == spm_tok.bos_id
  assert spm_tok.decode(ids + [spm_tok.eos_id, spm_tok.pad_id]) == "hi there"


def test_spm_training_is_deterministic(tmp_path):
  texts = _facts(300, seed=1)
  a = tok_lib.SentencePieceTokenizer.train(texts, 500, tmp_path / "a")
  b = tok_lib.SentencePieceTokenizer.train(texts, 500, tmp_path / "b", "spm")
  assert a.model_path.read_bytes() == b.model_path.read_bytes()
  for text in ROUND_TRIP + texts[:5]:
    assert a.encode(text) == b.encode(text)


def test_spm_missing_file(tmp_path):
  missing = tmp_path / "nope.model"
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    tok_lib.SentencePieceTokenizer(missing)


def test_tag_id_unknown_tag(spm_tok):
  with pytest.raises(KeyError, match="<nope>") as info:
    spm_tok.tag_id("<nope>")
  assert "<think>" in str(info.value)  # Lists the available tags.


# ---------------------------------------------------------------------------
# BPE imported from GGUF, against transformers as an independent reference.

# Varied text on which our tokenizer and transformers' GGUF loader agree.
REFERENCE_TEXTS = [
    "Hello world",
    "The Eiffel Tower was completed in 1889 and is 330 metres tall.",
    "def f(x):\n    return x ** 2  # square\n",
    "Numbers: 3.14159, -42, 1e10, 1,000,000 and $19.99",
    "Café naïve façade — 中文 — 😀 Привет мир",
    "  leading and   runs\tof\twhitespace  ",
    "line1\nline2\r\n\nline4\n",
    "don't we'll I'm they've",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
    "a<think>b",
    "    \n\n   ",
    "{'json': [1, 2, {\"k\": null}]}",
]


@pytest.fixture(scope="module")
def gguf_path(smollm2_gguf) -> pathlib.Path:
  return pathlib.Path(smollm2_gguf)


@pytest.fixture(scope="module")
def reference(gguf_path):
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(
      str(gguf_path.parent), gguf_file=gguf_path.name
  )


@pytest.fixture(scope="module")
def gguf_base(gguf_path) -> tok_lib.BPETokenizer:
  """Loaded once; tests that mutate it (add_tags) must use `bpe` instead."""
  return tok_lib.BPETokenizer.from_gguf(gguf_path)


@pytest.fixture
def bpe(gguf_base, tmp_path) -> tok_lib.BPETokenizer:
  """A fresh copy of the GGUF tokenizer (via save/load, faster than GGUF)."""
  return tok_lib.BPETokenizer.from_tokenizer_json(gguf_base.save(tmp_path))


def test_gguf_matches_transformers(gguf_base, reference):
  for text in REFERENCE_TEXTS:
    ids = gguf_base.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False), text
  assert gguf_base.bos_id == reference.bos_token_id
  assert gguf_base.eos_id == reference.eos_token_id
  assert gguf_base.vocab_size == len(reference) == 49152
  # SmolLM2's GGUF names <|im_end|> as padding, which is also its EOS.
  assert gguf_base.pad_id == gguf_base.eos_id == 2


def test_gguf_round_trip(gguf_base):
  for text in REFERENCE_TEXTS:
    if "<|im_start|>" in text:
      continue  # bos/eos are dropped on decode.
    assert gguf_base.decode(gguf_base.encode(text)) == text


def test_gguf_bos_eos_skipped_on_decode(gguf_base):
  ids = gguf_base.encode("Hi there", add_bos=True)
  assert ids[0] == gguf_base.bos_id == 1
  assert gguf_base.decode(ids + [gguf_base.eos_id]) == "Hi there"


def test_gguf_smollm_isolates_digits(gguf_base, reference):
  # llama.cpp's "smollm" pre-tokenizer (and SmolLM2's own tokenizer.json)
  # split each digit off before the GPT-2 regex, so the two spaces stay one
  # pre-token and merge to "ĠĠ". transformers' GGUF loader skips that split
  # and yields two "Ġ"; the model was trained on the former.
  double_space = gguf_base.backend.token_to_id("ĠĠ")
  digits = gguf_base.encode("2024")
  assert gguf_base.encode("x  2024") == (
      gguf_base.encode("x") + [double_space] + digits
  )
  assert reference.encode("x  2024", add_special_tokens=False) != (
      gguf_base.encode("x  2024")
  )


def test_gguf_has_no_tags_until_added(gguf_base):
  assert gguf_base.tag_ids == {}
  with pytest.raises(KeyError, match="<think>"):
    gguf_base.tag_id("<think>")
  # Before tags are added, a tag spans several ordinary tokens.
  assert len(gguf_base.tag_token_ids("<think>")) > 1


def test_add_tags(bpe, gguf_base):
  base_size = bpe.vocab_size
  added = bpe.add_tags()
  assert added == len(TAGS)
  assert bpe.vocab_size == base_size + added
  assert set(bpe.tag_ids) == set(TAGS)
  for tag in TAGS:
    tag_id = bpe.tag_id(tag)
    assert base_size <= tag_id < bpe.vocab_size
    assert bpe.encode(tag) == [tag_id]
    assert bpe.tag_token_ids(tag) == [tag_id]
  for text in ROUND_TRIP:
    assert bpe.decode(bpe.encode(text)) == text, text
  # Text around a tag encodes exactly as it does without the tag.
  answer = bpe.tag_id("<answer>")
  assert bpe.encode("Paris<answer>") == bpe.encode("Paris") + [answer]
  assert bpe.encode("Paris") == gguf_base.encode("Paris")
  think, end_think = bpe.tag_id("<think>"), bpe.tag_id("</think>")
  assert bpe.encode("<think> Who is X?</think>") == (
      [think] + gguf_base.encode(" Who is X?") + [end_think]
  )
  # Adding again reuses every id.
  before = dict(bpe.tag_ids)
  assert bpe.add_tags() == 0
  assert bpe.tag_ids == before and bpe.vocab_size == base_size + added


def test_add_tags_reuses_present_tags(bpe):
  assert bpe.add_tags(TAGS[:4]) == 4
  size = bpe.vocab_size
  first = {t: bpe.tag_id(t) for t in TAGS[:4]}
  assert bpe.add_tags() == len(TAGS) - 4
  assert bpe.vocab_size == size + len(TAGS) - 4
  assert {t: bpe.tag_id(t) for t in TAGS[:4]} == first


def test_save_and_reload(bpe, tmp_path):
  bpe.add_tags()
  saved = bpe.save(tmp_path / "ckpt")
  assert saved == tmp_path / "ckpt" / "tokenizer.json"
  again = tok_lib.BPETokenizer.from_tokenizer_json(tmp_path / "ckpt")
  assert again.vocab_size == bpe.vocab_size
  assert again.tag_ids == bpe.tag_ids
  assert (again.bos_id, again.eos_id, again.pad_id) == (
      bpe.bos_id, bpe.eos_id, bpe.pad_id
  )
  for text in REFERENCE_TEXTS + ROUND_TRIP:
    assert again.encode(text) == bpe.encode(text), text
  # A saved file path (not a folder) works too.
  file_path = bpe.save(tmp_path / "other" / "tok.json")
  assert tok_lib.BPETokenizer.from_tokenizer_json(file_path).encode(
      ROUND_TRIP[0]
  ) == bpe.encode(ROUND_TRIP[0])


def test_bpe_missing_files(tmp_path):
  missing = tmp_path / "x.gguf"
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    tok_lib.BPETokenizer.from_gguf(missing)
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    tok_lib.BPETokenizer.from_tokenizer_json(tmp_path)


def test_bpe_without_special_ids_pads_with_dedicated_token(bpe, tmp_path):
  path = bpe.save(tmp_path)
  (tmp_path / "tokenizer_config.json").unlink()
  bare = tok_lib.BPETokenizer.from_tokenizer_json(path)
  assert bare.bos_id is None and bare.eos_id is None
  assert bare.pad_id == bpe.vocab_size  # A new "<|pad|>" special token.
  assert bare.vocab_size == bpe.vocab_size + 1
  with pytest.raises(ValueError, match="BOS"):
    bare.encode("x", add_bos=True)


# ---------------------------------------------------------------------------
# load_tokenizer.


def test_load_tokenizer_dispatch(spm_tok, bpe, gguf_path, tmp_path):
  loaded = tok_lib.load_tokenizer(spm_tok.model_path)
  assert isinstance(loaded, tok_lib.SentencePieceTokenizer)
  assert loaded.encode(ROUND_TRIP[0]) == spm_tok.encode(ROUND_TRIP[0])

  loaded = tok_lib.load_tokenizer(gguf_path)
  assert isinstance(loaded, tok_lib.BPETokenizer)
  assert loaded.encode("Hello world") == bpe.encode("Hello world")

  json_path = bpe.save(tmp_path / "ckpt")
  for path in (json_path, json_path.parent, str(json_path.parent)):
    loaded = tok_lib.load_tokenizer(path)
    assert isinstance(loaded, tok_lib.BPETokenizer)
    assert loaded.encode("Hello world") == bpe.encode("Hello world")


def test_load_tokenizer_errors(tmp_path):
  unknown = tmp_path / "vocab.txt"
  unknown.write_text("hello\n")
  with pytest.raises(ValueError, match=re.escape(str(unknown))):
    tok_lib.load_tokenizer(unknown)
  empty_dir = tmp_path / "empty"
  empty_dir.mkdir()
  with pytest.raises(ValueError, match=re.escape(str(empty_dir))):
    tok_lib.load_tokenizer(empty_dir)
  with pytest.raises(FileNotFoundError, match="missing.model"):
    tok_lib.load_tokenizer(tmp_path / "missing.model")
  with pytest.raises(FileNotFoundError, match="missing.gguf"):
    tok_lib.load_tokenizer(tmp_path / "missing.gguf")
  with pytest.raises(FileNotFoundError, match="no_such_dir"):
    tok_lib.load_tokenizer(tmp_path / "no_such_dir")
  bad_json = tmp_path / "bad" / "tokenizer.json"
  bad_json.parent.mkdir()
  bad_json.write_text("not json")
  with pytest.raises(ValueError, match=re.escape(str(bad_json))):
    tok_lib.load_tokenizer(bad_json.parent)


def test_gguf_unsupported_model(tmp_path):
  gguf = pytest.importorskip("gguf")
  path = tmp_path / "llama_spm.gguf"
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_tokenizer_model("llama")
  writer.add_token_list(["<unk>", "a"])
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(ValueError, match="'llama'") as info:
    tok_lib.BPETokenizer.from_gguf(path)
  assert str(path) in str(info.value)


def test_spm_whole_words_have_one_id_in_every_context(tmp_path):
  """A whole word is one piece with the same id after a tag, after a space,
  at the start of a line and before punctuation; text still round-trips."""
  texts = _facts(400)
  words = ["Vorantel", "Kelmir", "Dova"]
  texts += [f"{w} met {v} in town.\n{v} and {w} left." for w in words
            for v in words]
  whole = tok_lib.SentencePieceTokenizer.train(texts, 600, tmp_path / "b",
                                               whole_words=words)
  contexts = ["<answer>{}</answer>", "the film {} was", "x\n{} was", "(1){}.",
              "so {}."]
  for word in words:
    (wid,) = whole.encode(word)
    for c in contexts:
      assert wid in whole.encode(c.format(word)), (c, word)
    assert whole.encode(" " + word)[-1:] == [wid]
  for text in ROUND_TRIP + texts[-3:]:
    assert whole.decode(whole.encode(text)) == text
