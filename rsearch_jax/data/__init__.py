"""Data: question-answer JSONL, the prompt iterator, the synthetic world.

  QAExample, read_qa_jsonl, PromptIterator   R1-Searcher-format QA files and
                                             deterministic resumable batches
  synthetic                                  the synthetic knowledge-base task:
    WorldConfig, World, Fact, Question, make_world, make_splits,
    sft_questions, write_jsonl, read_jsonl, prompt, scripted_trajectory

  register_qa_tasks, register_jsonl_task, load_task_examples, load_qa_file,
  register_synthetic_task, load_synthetic_questions
                                             seqio tasks over QA JSONL (seqio
                                             itself is imported on first use)
"""

from __future__ import annotations

from rsearch_jax.data import synthetic
from rsearch_jax.data._qa import PromptIterator, QAExample, read_qa_jsonl
from rsearch_jax.data._tasks import (load_qa_file, load_synthetic_questions,
                                     load_task_examples, register_jsonl_task,
                                     register_qa_tasks,
                                     register_synthetic_task)
from rsearch_jax.data.synthetic import (Fact, Question, World, WorldConfig,
                                        make_splits, make_world, prompt,
                                        read_jsonl, scripted_trajectory,
                                        sft_questions, write_jsonl)

__all__ = ["QAExample", "read_qa_jsonl", "PromptIterator", "register_qa_tasks",
           "register_jsonl_task", "load_task_examples", "load_qa_file",
           "register_synthetic_task", "load_synthetic_questions", "synthetic",
           "WorldConfig", "World", "Fact", "Question", "make_world",
           "make_splits", "sft_questions", "write_jsonl", "read_jsonl",
           "prompt", "scripted_trajectory"]
