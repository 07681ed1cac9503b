"""The host side of the hand-off: query tokens in, document tokens out.

Main entry points:
  DocumentFormat      how a block of documents is written (tags, numbering).
  RetrievalHandoff    the callable the decode loop calls through io_callback;
                      it keeps the log of queries and documents per row.

The block is built from token ids, never by decoding and re-encoding the
sequence: each document's text is encoded on its own, truncated to a token
budget, and the pieces are concatenated with the tag ids, e.g. (R1-Searcher):

  <|begin_of_documents|>\\n(1)Title\\ntext...\\n(2)...\\n<|end_of_documents|>\\n\\n

An empty query or an empty result gives a block whose body is "None"; a row
past its search budget gets a block that says so, and no search runs.

Rows may search different corpora (`corpora`, one key per row, set for one
sampling call): the retriever is then a `retrieval.RoutedRetriever`.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from typing import Sequence

import numpy as np

from rsearch_jax.tokenizer import Tokenizer

NO_RESULT_TEXT = "None"
BUDGET_TEXT = ("The search budget is used up; no search was run. Answer with "
               "what you know.")


@dataclasses.dataclass(frozen=True)
class DocumentFormat:
  """How retrieved documents are shown to the model.

  Attributes:
    query_begin / query_end: the tags around a query (R1-Searcher:
      `<|begin_of_query|>` / `<|end_of_query|>`; R1-Searcher++: `<external>` /
      `</external>`).
    docs_begin / docs_end: the tags around the block (`<|begin_of_documents|>`
      / `<|end_of_documents|>`, or `<document>` / `</document>`).
    top_k: documents per query.
    doc_tokens: token budget of each document's text.
    block_len: fixed length of the whole block (the loop's doc_block_len);
      document budgets shrink to fit it.
  """

  query_begin: str = "<|begin_of_query|>"
  query_end: str = "<|end_of_query|>"
  docs_begin: str = "<|begin_of_documents|>"
  docs_end: str = "<|end_of_documents|>"
  top_k: int = 3
  doc_tokens: int = 64
  block_len: int = 256


@dataclasses.dataclass
class SearchRecord:
  """One retrieval of one row: the query text and the documents shown."""

  query: str
  docs: list  # list[retrieval.Doc]; empty when nothing was run or found
  ran: bool


class RetrievalHandoff:
  """Host callback: finds each searching row's query, retrieves, formats.

  Thread-safe; memoized on (row id, step) so that devices holding the same rows
  (a tensor-parallel axis) share one retrieval.
  """

  def __init__(self, retriever, tokenizer: Tokenizer, fmt: DocumentFormat,
               max_searches: int):
    self.retriever = retriever
    self.tokenizer = tokenizer
    self.fmt = fmt
    self.max_searches = max_searches
    self._open = list(tokenizer.tag_token_ids(fmt.docs_begin)) + \
        tokenizer.encode("\n")
    self._close = list(tokenizer.tag_token_ids(fmt.docs_end)) + \
        tokenizer.encode("\n\n")
    self._newline = tokenizer.encode("\n")
    overhead = len(self._open) + len(self._close)
    if overhead + 8 > fmt.block_len:
      raise ValueError(
          f"doc_block_len={fmt.block_len} cannot hold the document tags "
          f"({overhead} tokens) and any text")
    self._lock = threading.Lock()
    self._memo: dict[tuple[int, int], tuple[np.ndarray, int, int]] = {}
    self.log: dict[int, list[SearchRecord]] = {}
    self.corpora: Sequence[str] | None = None

  def reset(self, corpora: Sequence[str] | None = None) -> None:
    """Forgets the last call's searches; `corpora[i]` names row i's corpus
    for the next call (None: every row searches the retriever's default)."""
    if corpora is not None and "corpora" not in inspect.signature(
        self.retriever.search).parameters:
      raise ValueError("per-row corpora need a retrieval.RoutedRetriever, not "
                       f"{type(self.retriever).__name__}")
    with self._lock:
      self._memo.clear()
      self.log = {}
      self.corpora = None if corpora is None else list(corpora)

  # -- query extraction ------------------------------------------------------

  # Tokens decoded to find a query: enough for any query and its tags.
  QUERY_WINDOW = 512

  def query_text(self, row_tokens: np.ndarray, end: int) -> str:
    """The text between the last query_begin and the query_end ending at
    `end` (exclusive); the whole window when the model never opened a query.

    Found in text, not in ids, because an imported BPE tokenizer that keeps
    the tags as plain text spells them differently in different contexts
    (" <|" or ")<|" or "<|" for the same tag).
    """
    window = row_tokens[max(0, end - self.QUERY_WINDOW):end].tolist()
    text = self.tokenizer.decode(window)
    stop = text.rfind(self.fmt.query_end)
    stop = len(text) if stop < 0 else stop
    start = text.rfind(self.fmt.query_begin, 0, stop)
    start = 0 if start < 0 else start + len(self.fmt.query_begin)
    return text[start:stop].strip()

  # -- block building --------------------------------------------------------

  def build_block(self, docs: Sequence, note: str | None = None) -> list[int]:
    """Token ids of one document block (at most block_len)."""
    body: list[list[int]] = []
    if note is not None:
      body.append(self.tokenizer.encode(note) + self._newline)
    else:
      room = self.fmt.block_len - len(self._open) - len(self._close)
      per_doc = min(self.fmt.doc_tokens, room // max(len(docs), 1))
      for j, doc in enumerate(docs):
        # Encoded as one text, so the pieces are the tokenizer's natural ones
        # (".\n" is one piece in most vocabularies); cut to the budget.
        text = f"({j + 1}){doc.contents()}"
        ids = self.tokenizer.encode(text + "\n")
        if len(ids) > per_doc:
          budget = max(per_doc - len(self._newline), 0)
          ids = self.tokenizer.encode(text)[:budget] + self._newline
        body.append(ids)
    ids = self._open + [t for piece in body for t in piece]
    ids = ids[:self.fmt.block_len - len(self._close)] + self._close
    return ids

  # -- the callback ----------------------------------------------------------

  def __call__(self, tokens, cursor, need, num_searches, row_ids, step):
    tokens, cursor, need = np.asarray(tokens), np.asarray(cursor), np.asarray(need)
    num_searches, row_ids = np.asarray(num_searches), np.asarray(row_ids)
    step = int(np.asarray(step))
    b = tokens.shape[0]
    block = np.zeros((b, self.fmt.block_len), np.int32)
    block_len = np.zeros((b,), np.int32)
    ran = np.zeros((b,), np.int32)
    todo = []
    with self._lock:
      for i in np.flatnonzero(need):
        key = (int(row_ids[i]), step)
        if key in self._memo:
          block[i], block_len[i], ran[i] = self._memo[key]
        else:
          todo.append(i)
    queries = {i: self.query_text(tokens[i], int(cursor[i])) for i in todo}
    searchable = [i for i in todo
                  if queries[i] and num_searches[i] < self.max_searches]
    results = {}
    if searchable:
      qs = [queries[i] for i in searchable]
      if self.corpora is None:
        found = self.retriever.search(qs, self.fmt.top_k)
      else:
        found = self.retriever.search(
            qs, self.fmt.top_k,
            corpora=[self.corpora[int(row_ids[i])] for i in searchable])
      results = dict(zip(searchable, found))
    with self._lock:
      for i in todo:
        over = num_searches[i] >= self.max_searches
        docs = results.get(i, [])
        if over:
          ids = self.build_block([], note=BUDGET_TEXT)
        elif not docs:
          ids = self.build_block([], note=NO_RESULT_TEXT)
        else:
          ids = self.build_block(docs)
        block[i, :len(ids)] = ids
        block_len[i] = len(ids)
        ran[i] = int(i in results)
        key = (int(row_ids[i]), step)
        self._memo[key] = (block[i].copy(), block_len[i], ran[i])
        self.log.setdefault(int(row_ids[i]), []).append(
            SearchRecord(queries[i], list(docs), bool(ran[i])))
    return block, block_len, ran
