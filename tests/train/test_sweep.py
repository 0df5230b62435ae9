"""`genjax sweep`: grid points as ordinary runs, resumable, compared at the end."""

import json
import os

import numpy as np
import pytest

from genjax.cli import main
from genjax.config import ConfigError, load
from genjax.stream import read
from genjax.train.sweep import grid_points, parse_grid
from tests.conftest import CONFIGS

TINY = str(CONFIGS / "tiny.py")


def test_grid_points_and_bad_grids():
    config = load(TINY)
    grid = parse_grid(["model.d_model=16,32", "train.steps=6", "optim.lr=1e-3,3e-3"], config)
    names = [name for name, _ in grid_points(grid)]
    assert names == ["d_model=16,steps=6,lr=1e-3", "d_model=16,steps=6,lr=3e-3",
                     "d_model=32,steps=6,lr=1e-3", "d_model=32,steps=6,lr=3e-3"]
    for bad, match in ((["model.width=1,2"], "unknown config key 'model.width'"),
                       (["model=1"], "is a section"), (["model.d_model"], "KEY=V1,V2"),
                       (["train.steps=1", "train.steps=2"], "given twice"), ([], "at least one")):
        with pytest.raises(ConfigError, match=match):
            parse_grid(bad, config)


def test_sweep_runs_points_resumes_and_compares(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")
    args = ["genjax", "sweep", "--config", TINY, "--workdir", str(tmp_path),
            "--grid", "model.d_model=16,32", "--grid", "train.steps=6", "--parallel", "2"]
    assert main(args) == 0
    points = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["done", "done"]
    for p, width in zip(points, (16, 32)):
        run = read(os.path.join(p["workdir"], "metrics"))
        np.testing.assert_array_equal(run.steps, np.arange(6))
        assert json.loads(run.attrs["config"])["model"]["d_model"] == width
    compared = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert [r["name"] for r in compared["runs"]] == ["d_model=16,steps=6", "d_model=32,steps=6"]
    assert compared["runs"][0]["params"] < compared["runs"][1]["params"]
    capsys.readouterr()
    assert main(args) == 0  # again: nothing rerun
    assert capsys.readouterr().out.count("already finished") == 2


@pytest.mark.slow  # 13 s
def test_sweep_reports_a_failed_point(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")
    # 4 query heads cannot share 3 kv heads: that point's `genjax train` exits 2
    assert main(["genjax", "sweep", "--config", TINY, "--workdir", str(tmp_path),
                 "--grid", "model.n_kv_heads=2,3", "--grid", "train.steps=3"]) == 1
    points = {p["name"]: p for p in json.loads((tmp_path / "sweep.json").read_text())["points"]}
    assert points["n_kv_heads=2,steps=3"]["status"] == "done"
    bad = points["n_kv_heads=3,steps=3"]
    assert bad["status"] == "failed" and bad["returncode"] == 2 and "n_kv_heads" in bad["error"]
    assert "1 point(s) failed: n_kv_heads=3,steps=3" in capsys.readouterr().err
