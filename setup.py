"""rsearch_jax: train language models to search while they reason, with RL, in JAX."""
from setuptools import find_packages, setup

# Ranges checked to co-resolve on Python 3.11 (numpy 2.4, ml_dtypes 0.6).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "sentencepiece>=0.2.3,<0.3",
    "ml_collections>=1.1.0,<1.2",
    "absl-py>=2.1",
    "seqio==0.0.20",
    "tensorflow>=2.21.0,<2.22",
    "tensorflow-text>=2.21.1,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    "numpy>=2.0,<2.5",
    "safetensors>=0.4",
    "tokenizers>=0.21,<0.24",
    "gguf>=0.17,<0.20",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "bm25s>=0.3.16,<0.4",
    "PyStemmer>=3.0,<4",
]

# The reference stack, for tests and benchmarks only: torch 2.13.0 is the CPU
# wheel the machine's pip finds locally; a looser pin pulls a CUDA build.
TEST_REQUIRES = [
    "torch==2.13.0",
    "transformers>=5.0,<6",
    "accelerate>=1.0",  # transformers needs it to read GGUF files
    "pytest>=8",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "rank_bm25==0.2.2",  # benchmarks/retrieval.py only
    # tests/notebook_test.py runs notebooks/demo.ipynb on a python3 kernel
    # (ipykernel's own kernelspec, i.e. this interpreter).
    "nbclient>=0.10,<0.12",
    "nbformat>=5.10,<6",
    "ipykernel>=6.29,<8",
]

setup(
    name="rsearch_jax",
    version="0.1.0",
    description="Search-augmented reasoning with RL (R1-Searcher, R1-Searcher++, "
    "Retro-Search, DeepMMSearch-R1) in JAX/Flax.",
    packages=find_packages(include=["rsearch_jax", "rsearch_jax.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
