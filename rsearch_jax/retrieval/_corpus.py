"""Corpus readers: every supported format -> a list of `Doc` passages.

Main entry points:
  load_corpus(spec, format=None)    dispatch on the suffix, `format`, or a
                                    corpus asset name (`wiki-vital-en`,
                                    optionally written `asset:wiki-vital-en`)
  read_jsonl_contents(path)         Search-R1: {"id", "contents": "\"Title\"\ntext"}
  read_kilt_pages(path)             KILT pages, split into 100-word passages as
                                    R1-Searcher's split_kilt_to_100 does
  read_r1_tsv(path)                 R1-Searcher TSV: "id\ttitle   text" or
                                    "id\t\"Title: ... Text: ...\""
  read_wiki_vital(path)             the wiki-vital-en asset (title -> lead)
  split_words(title, text, ...)     ~100-word passages, title kept on each

A malformed line is a ValueError that names the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import re

from rsearch_jax._jsonl import read_objects
from rsearch_jax import assets
from rsearch_jax.retrieval._base import Doc

PASSAGE_WORDS = 100


def split_words(doc_id: str, title: str, text: str,
                words: int = PASSAGE_WORDS) -> list[Doc]:
  """`text` cut into passages of `words` words (the last may be shorter)."""
  tokens = text.split()
  return [Doc(id=f"{doc_id}-{i // words}", title=title,
              text=" ".join(tokens[i:i + words]))
          for i in range(0, len(tokens), words)]


def _json_lines(path: pathlib.Path):
  return ((lineno, row) for lineno, _, row in read_objects(path))


def _field(path, lineno, row, name, kind):
  if name not in row:
    raise ValueError(f"{path}:{lineno}: missing field {name!r}")
  if not isinstance(row[name], kind):
    raise ValueError(f"{path}:{lineno}: field {name!r} should be "
                     f"{getattr(kind, '__name__', kind)}, got {type(row[name]).__name__}")
  return row[name]


def read_jsonl_contents(path: os.PathLike) -> list[Doc]:
  """Search-R1's corpus format; the title is the quoted first line."""
  path = pathlib.Path(path)
  docs = []
  for lineno, row in _json_lines(path):
    contents = _field(path, lineno, row, "contents", str)
    first, sep, rest = contents.partition("\n")
    title, text = (first.strip().strip('"'), rest) if sep else ("", contents)
    docs.append(Doc(id=str(row.get("id", lineno - 1)), title=title, text=text.strip()))
  return docs


def read_kilt_pages(path: os.PathLike, words: int = PASSAGE_WORDS) -> list[Doc]:
  """KILT knowledge-source pages: paragraphs joined (markup dropped), then
  cut into `words`-word passages, as R1-Searcher builds its KILT corpus."""
  path = pathlib.Path(path)
  docs = []
  for lineno, row in _json_lines(path):
    title = _field(path, lineno, row, "wikipedia_title", str)
    paragraphs = _field(path, lineno, row, "text", list)
    if not all(isinstance(p, str) for p in paragraphs):
      raise ValueError(f"{path}:{lineno}: field 'text' should be a list of strings")
    # KILT paragraphs end in "\n"; joined without a separator as R1-Searcher
    # does, so passage boundaries (every 100 words) fall where theirs do.
    text = "".join(paragraphs)
    text = text.replace("BULLET::::", "").replace("Section::::", "")
    docs += split_words(str(row.get("wikipedia_id", lineno - 1)), title, text, words)
  return docs


_TITLE_TEXT = re.compile(r"^Title:\s*(.*?)\s+Text:\s*(.*)$", re.S)


def split_r1_passage(body: str) -> tuple[str, str]:
  """(title, text) of an R1-Searcher passage: `title   text` (three spaces,
  its KILT corpus) or `"Title: ... Text: ..."` (CSV-quoted, its HotpotQA
  abstracts); anything else is untitled text."""
  if len(body) > 1 and body.startswith('"') and body.endswith('"'):
    body = next(csv.reader(io.StringIO(body)))[0]  # "" -> " inside
  m = _TITLE_TEXT.match(body)
  if m:
    return m.group(1).strip(), m.group(2).strip()
  title, sep, text = body.partition("   ")
  return (title.strip(), text.strip()) if sep else ("", body.strip())


def read_r1_tsv(path: os.PathLike) -> list[Doc]:
  """R1-Searcher's TSV corpora: `id \\t title   text` (KILT 100-word
  passages) or `id \\t "Title: ... Text: ..."` (HotpotQA abstracts)."""
  path = pathlib.Path(path)
  docs = []
  with open(path, encoding="utf-8-sig") as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip("\r\n")
      if not line.strip():
        continue
      doc_id, sep, body = line.partition("\t")
      if not sep or not doc_id.strip():
        raise ValueError(f"{path}:{lineno}: expected 'id<TAB>text'")
      title, text = split_r1_passage(body)
      if not text:
        raise ValueError(f"{path}:{lineno}: empty passage text")
      docs.append(Doc(id=doc_id.strip(), title=title, text=text))
  return docs


def read_wiki_vital(path: os.PathLike, words: int = PASSAGE_WORDS) -> list[Doc]:
  """The wiki-vital-en asset: a JSON object title -> {"title", "extract"}
  (the Wikipedia lead section)."""
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected a JSON object of title -> text")
  docs = []
  for i, (key, entry) in enumerate(data.items()):
    # {"title": ..., "extract": ...} entries; a bare string is the text.
    if isinstance(entry, dict):
      title, text = entry.get("title") or key, entry.get("extract")
    else:
      title, text = key, entry
    if not isinstance(text, str):
      raise ValueError(f"{path}: entry {key!r} has no text ('extract')")
    if text.strip():
      docs += split_words(str(i), title, text, words)
  return docs


READERS = {"jsonl": read_jsonl_contents, "kilt": read_kilt_pages,
           "tsv": read_r1_tsv, "wiki_vital": read_wiki_vital}

# Assets (rsearch_jax.assets) that are corpora, and their format.
CORPUS_ASSETS = {"wiki-vital-en": "wiki_vital"}


def asset_name(spec: str | os.PathLike) -> str | None:
  """The corpus asset `spec` names (`NAME` or `asset:NAME`), else None."""
  spec = str(spec)
  if spec.startswith("asset:"):
    name = spec[len("asset:"):]
    if name not in CORPUS_ASSETS:
      raise ValueError(f"{spec!r}: not a corpus asset; known: {sorted(CORPUS_ASSETS)}")
    return name
  return spec if spec in CORPUS_ASSETS else None


def _guess_format(path: pathlib.Path) -> str:
  suffix = path.suffix.lower()
  if suffix == ".tsv":
    return "tsv"
  if suffix == ".json":
    return "wiki_vital"
  if suffix == ".jsonl":
    with open(path, encoding="utf-8-sig") as f:
      first = next((line for line in f if line.strip()), "")
    return "kilt" if '"wikipedia_title"' in first else "jsonl"
  raise ValueError(f"{path}: cannot tell the corpus format from the suffix "
                   f"{suffix!r}; pass format= one of {sorted(READERS)}")


def load_corpus(spec: str | os.PathLike, format: str | None = None) -> list[Doc]:
  """Reads a corpus into passages.

  Args:
    spec: a corpus asset name (`wiki-vital-en` or `asset:wiki-vital-en`,
      fetched on first use), or a file path.
    format: one of READERS; by default from the file: .tsv (R1-Searcher),
      .jsonl (KILT pages when the first row has `wikipedia_title`, else
      Search-R1 `contents`), .json (title -> lead section).
  """
  if format is not None and format not in READERS:
    raise ValueError(f"corpus format {format!r} is not one of {sorted(READERS)}")
  name = asset_name(spec)
  if name is not None:
    return READERS[format or CORPUS_ASSETS[name]](assets.fetch(name, quiet=True))
  path = pathlib.Path(spec)
  if not path.is_file():
    raise FileNotFoundError(f"corpus not found: {spec}")
  return READERS[format or _guess_format(path)](path)
