"""Named assets: clear errors for an unknown name and for an asset not yet
fetched, and the command line."""

import pytest

from rsearch_jax import assets, builders


def test_unknown_asset_names_the_known_ones():
  with pytest.raises(KeyError, match=r"unknown asset 'smollm3'; known assets: "
                     r"smollm2-135m-instruct, wiki-vital-en"):
    assets.path("smollm3")
  with pytest.raises(KeyError, match="unknown asset 'nope'"):
    builders.resolve_path("asset:nope")
  assert assets.main(["fetch", "nope"]) == 1


def test_missing_asset_says_how_to_fetch_it(tmp_path, monkeypatch):
  monkeypatch.setenv("RSEARCH_CACHE", str(tmp_path))
  with pytest.raises(FileNotFoundError) as e:
    assets.path("wiki-vital-en")
  assert "python -m rsearch_jax.assets fetch wiki-vital-en" in str(e.value)
  assert str(tmp_path) in str(e.value)
  assert assets.main(["list"]) == 0
  assert assets.main([]) == 2


def test_missing_local_path_names_the_field(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"model.path='.*nowhere': no such"):
    builders.resolve_path(str(tmp_path / "nowhere"), field="model.path")
