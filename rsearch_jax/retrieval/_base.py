"""The retriever interface: a batch of queries in, k documents per query out."""

from __future__ import annotations

import abc
import dataclasses


@dataclasses.dataclass(frozen=True)
class Doc:
  """One passage of a corpus."""

  id: str
  title: str
  text: str

  def contents(self) -> str:
    """The string shown to the model: title on its own line, then the text."""
    return f"{self.title}\n{self.text}" if self.title else self.text


class Retriever(abc.ABC):
  """`search(queries, k)`: result i holds the top-k documents of query i; an
  empty or blank query gets an empty list, not an error."""

  @abc.abstractmethod
  def search(self, queries: list[str], k: int) -> list[list[Doc]]:
    ...

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
