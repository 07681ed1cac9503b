"""Prompts of each method, and the search tags each method uses.

Main entry points:
  METHOD_TAGS[method]            which tags a method queries with and receives.
  render_prompt(question, method, chat=...)   the text the policy continues.
  render_direct_prompt(question, chat=...)    the no-search baseline.
  render_rag_prompt(question, docs, method, chat=...)
                                 the naive-RAG baseline (documents retrieved
                                 once, shown by format_documents).

R1-Searcher queries with `<|begin_of_query|> ... <|end_of_query|>` and receives
`<|begin_of_documents|> ... <|end_of_documents|>`; R1-Searcher++ recalls with
`<internal> ... </internal>`, queries with `<external> ... </external>` and
receives `<document> ... </document>`. The R1-Searcher wording below follows
the system prompt of its released training code (the "instruct" prompt for
chat models, the "base" prompt for base models); both end the prompt with an
opened `<think>`, as R1-Searcher does.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MethodTags:
  """The tags around a query and around the documents that answer it."""

  query_begin: str
  query_end: str
  docs_begin: str
  docs_end: str


METHOD_TAGS: dict[str, MethodTags] = {
    "r1": MethodTags("<|begin_of_query|>", "<|end_of_query|>",
                     "<|begin_of_documents|>", "<|end_of_documents|>"),
    "r1pp": MethodTags("<external>", "</external>", "<document>", "</document>"),
}

_R1_RULES = (
    "Given a question, you should answer it by first thinking about the "
    "reasoning process in the mind and then providing the final answer.\n"
    "The output format of reasoning process and final answer are enclosed "
    "within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "\"<think> reasoning process here </think>\n\n<answer> final answer here "
    "</answer>\".\n"
    "During the thinking process, **you can perform searching for uncertain "
    "knowledge** if necessary with the format of \"<|begin_of_query|> search "
    "query (only list keywords, such as **\"keyword_1 keyword_2 ...\"**)"
    "<|end_of_query|>\". **A query must involve only a single triple**.\n"
    "Then, the search system will provide you with the retrieval information "
    "with the format of \"<|begin_of_documents|> ...search results... "
    "<|end_of_documents|>\"."
)

_R1PP_RULES = (
    "Given a question, you should answer it by first thinking about the "
    "reasoning process in the mind and then providing the final answer.\n"
    "The output format of reasoning process and final answer are enclosed "
    "within <think> </think> and <answer> </answer> tags, respectively.\n"
    "When you are sure of a fact, recall it yourself inside <internal> "
    "</internal>. When you are not, search for it with the format "
    "\"<external> search query (only keywords) </external>\"; the search "
    "system then returns the results inside <document> </document>. Search "
    "only when your own knowledge does not suffice."
)

SYSTEM_PROMPTS = {
    "r1": "You are a helpful assistant.\n" + _R1_RULES,
    "r1pp": "You are a helpful assistant.\n" + _R1PP_RULES,
}


def render_prompt(question: str, method: str = "r1", chat: str = "chatml") -> str:
  """The prompt text for `question`, ending with an opened `<think>`.

  Args:
    question: the user's question.
    method: "r1" or "r1pp" (which tags the instructions describe).
    chat: "chatml" (SmolLM2, Qwen2 instruct models: system and user turns,
      then the assistant turn) or "none" (R1-Searcher's base-model prompt).
  """
  if method not in SYSTEM_PROMPTS:
    raise ValueError(f"method={method!r}: expected one of {sorted(SYSTEM_PROMPTS)}")
  system = SYSTEM_PROMPTS[method]
  if chat == "chatml":
    return (f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n<think>")
  if chat == "none":
    rules = system.split("\n", 1)[1].replace("you ", "the Assistant ", 2)
    return ("The User asks a question, and the Assistant solves it.\n"
            f"{rules}\n\nUser:{question}\nAssistant: <think>")
  raise ValueError(f"chat={chat!r}: expected 'chatml' or 'none'")


# ---------------------------------------------------------------------------
# Baselines without search in the loop (launch/eval.py's "direct" and
# "naive_rag" modes): the same think-then-answer format, no query tags.
# ---------------------------------------------------------------------------

_ANSWER_RULES = (
    "Given a question, you should answer it by first thinking about the "
    "reasoning process in the mind and then providing the final answer.\n"
    "The output format of reasoning process and final answer are enclosed "
    "within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "\"<think> reasoning process here </think>\n\n<answer> final answer here "
    "</answer>\"."
)


def _rag_rules(method: str) -> str:
  tags = METHOD_TAGS[method]
  return (_ANSWER_RULES + "\n"
          "Documents retrieved for the question are given after it, with the "
          f"format of \"{tags.docs_begin} ...search results... "
          f"{tags.docs_end}\"; use them when they help.")


def format_documents(docs, method: str = "r1") -> str:
  """A block of documents as the search agent receives it: the method's
  document tags around "(1)text\\n(2)text\\n..." ("None" for no documents),
  the layout of R1-Searcher's evaluation and of the sampler's hand-off."""
  if method not in METHOD_TAGS:
    raise ValueError(f"method={method!r}: expected one of {sorted(METHOD_TAGS)}")
  tags = METHOD_TAGS[method]
  body = "".join(f"({j + 1}){d}\n" for j, d in enumerate(docs)) or "None\n"
  return f"{tags.docs_begin}\n{body}{tags.docs_end}"


def _chat_wrap(rules: str, user: str, chat: str) -> str:
  """System rules + user turn, ending with an opened `<think>`."""
  if chat == "chatml":
    return (f"<|im_start|>system\nYou are a helpful assistant.\n{rules}"
            f"<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n<think>")
  if chat == "none":
    rules = rules.replace("you ", "the Assistant ", 1)
    return ("The User asks a question, and the Assistant solves it.\n"
            f"{rules}\n\nUser:{user}\nAssistant: <think>")
  raise ValueError(f"chat={chat!r}: expected 'chatml' or 'none'")


def render_direct_prompt(question: str, chat: str = "chatml") -> str:
  """The prompt of the no-search baseline: think, then answer, from the
  model's own knowledge (no query tags are mentioned)."""
  return _chat_wrap(_ANSWER_RULES, question, chat)


def render_rag_prompt(question: str, docs, method: str = "r1",
                      chat: str = "chatml") -> str:
  """The prompt of the naive-RAG baseline: the question, then the documents
  retrieved for it once (`format_documents`), then think and answer.

  Args:
    question: the user's question.
    docs: the documents' texts (already cut to their budget), best first.
    method: whose document tags to use ("r1" or "r1pp").
    chat: "chatml" or "none", as in `render_prompt`.
  """
  if method not in METHOD_TAGS:
    raise ValueError(f"method={method!r}: expected one of {sorted(METHOD_TAGS)}")
  user = f"{question}\n\n{format_documents(docs, method)}"
  return _chat_wrap(_rag_rules(method), user, chat)
