"""genjax.paths: local paths, file:// and gs:// (against the GCS emulator) through one type."""

import os

import pytest

from genjax import paths


def test_local_and_file_urls_are_the_same_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(paths.as_path("run")) == str(tmp_path / "run")
    assert str(paths.as_path(f"file://{tmp_path}/run")) == str(tmp_path / "run")
    assert paths.kvstore_url("run") == f"file://{tmp_path}/run/"
    assert paths.kvstore_url("memory://m") == "memory://m/"
    assert not paths.is_url(f"file://{tmp_path}") and paths.is_url("gs://b/x")
    with pytest.raises(paths.PathError, match="memory:// paths are not supported"):
        paths.as_path("memory://run")


def test_gs_paths_write_move_copy_and_list(gcs):
    root = paths.as_path("gs://genjax-test/paths")
    assert str(root) == "gs://genjax-test/paths" and not os.path.exists("gs:")
    paths.write_atomic(root / "a" / "x.json", "{}")
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    (root / "a" / "b" / "y.bin").write_bytes(b"\x00\x01")
    paths.copytree(root / "a", root / "c")
    assert sorted(str(p) for p in paths.files_under(root / "c")) == [
        "gs://genjax-test/paths/c/b/y.bin", "gs://genjax-test/paths/c/x.json"]
    paths.move(root / "c", root / "d")
    assert not (root / "c").exists()
    assert (root / "d" / "b" / "y.bin").read_bytes() == b"\x00\x01"
    assert (root / "d" / "x.json").read_text() == "{}"
    assert not os.path.exists("gs:")  # nothing ever landed on local disk
