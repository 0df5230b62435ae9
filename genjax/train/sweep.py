"""`genjax sweep`: a grid of config overrides, each point an ordinary `genjax train` run.

`--grid model.d_model=32,64 --grid train.steps=200` runs every combination into
WORKDIR/<key=value,...> (the keys' last parts name it: `d_model=32,steps=200`), N at a time as
subprocesses on this machine (on a cluster, launch each point as its own job with the same
overrides). A one-value grid is a fixed override. A point's directory is its run's workdir, so
a sweep started again resumes each point where it stopped and skips the finished ones.
WORKDIR/sweep.json records the grid and each point's status; `genjax compare WORKDIR/*/`
(run at the end of a sweep, into WORKDIR/compare) reads them.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence

from genjax.config import ConfigError
from genjax.paths import is_url


def parse_grid(specs: Sequence[str], config) -> list[tuple[str, list[str]]]:
    """["key=v1,v2", ...] -> [(key, [v1, v2]), ...]; every key must name a config key."""
    from genjax.config import ConfigDict

    grid = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid {spec!r}: expected KEY=V1,V2,...")
        node = config
        for part in key.split("."):
            if not isinstance(node, ConfigDict) or part not in node:
                raise ConfigError(f"--grid {spec!r}: unknown config key '{key}'")
            node = node[part]
        if isinstance(node, ConfigDict):
            raise ConfigError(f"--grid {spec!r}: '{key}' is a section, not a key")
        if any(k == key for k, _ in grid):
            raise ConfigError(f"--grid {spec!r}: '{key}' is given twice")
        grid.append((key, values.split(",")))
    if not grid:
        raise ConfigError("genjax sweep needs at least one --grid KEY=V1,V2,...")
    return grid


def grid_points(grid: list[tuple[str, list[str]]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(directory name, [(key, value), ...]) of every combination, in grid order."""
    leaves = [key.rsplit(".", 1)[-1] for key, _ in grid]
    if len(set(leaves)) < len(leaves):  # two keys end alike: name points by full keys
        leaves = [key for key, _ in grid]
    points = []
    for values in itertools.product(*(v for _, v in grid)):
        name = ",".join(f"{leaf}={v}" for leaf, v in zip(leaves, values))
        points.append((name.replace("/", "_"), list(zip((k for k, _ in grid), values))))
    return points


def _finished(workdir: pathlib.Path, config_steps: int | None) -> bool:
    """A point whose run already wrote its last row (skipped when the sweep is rerun)."""
    from genjax.stream.store import StreamError, read

    try:
        run = read(workdir / "metrics")
    except StreamError:
        return False
    stored = json.loads(run.attrs.get("config") or "{}")
    steps = stored.get("train", {}).get("steps", config_steps)
    return len(run) > 0 and steps is not None and int(run.steps[-1]) + 1 >= steps


def run_sweep(config_path: str, grid_specs: Sequence[str], workdir: str,
              parallel: int = 1, log=print) -> list[dict]:
    """Runs every grid point (at most `parallel` at once); returns each point's record.
    A point that fails is recorded with the last line of its train.log; the others go on."""
    from genjax.config import load

    config = load(config_path)
    points = grid_points(parse_grid(grid_specs, config))
    if is_url(workdir):  # each point's train.log is a local file its process writes
        raise ConfigError(f"genjax sweep runs its points on this machine: use a local "
                          f"--workdir, not {workdir}")
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1, got {parallel}")
    records = {name: {"name": name, "workdir": str(root / name),
                      "overrides": dict(overrides), "status": "pending"}
               for name, overrides in points}
    manifest = root / "sweep.json"

    def save():
        manifest.write_text(json.dumps({"config": str(config_path), "grid": list(grid_specs),
                                        "points": list(records.values())}, indent=1))

    queue = list(points)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    while queue or running:
        while queue and len(running) < parallel:
            name, overrides = queue.pop(0)
            sub = root / name
            steps = dict(overrides).get("train.steps", config.train.steps)
            if _finished(sub, int(steps)):
                records[name]["status"] = "done"
                log(f"sweep: {name} already finished")
                continue
            sub.mkdir(exist_ok=True)
            cmd = [sys.executable, "-m", "genjax.cli", "train", "--config", str(config_path),
                   "--workdir", str(sub), *(f"--config.{k}={v}" for k, v in overrides)]
            with (sub / "train.log").open("a") as out:
                running[name] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                  env=env), time.monotonic())
            records[name]["status"] = "running"
            log(f"sweep: {name} started ({len(records) - len(queue)}/{len(records)})")
        save()
        time.sleep(0.2)
        for name, (proc, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            rec = records[name]
            rec["seconds"] = round(time.monotonic() - started, 1)
            rec["returncode"] = proc.returncode
            if proc.returncode == 0:
                rec["status"] = "done"
                log(f"sweep: {name} done in {rec['seconds']:.0f} s")
            else:
                lines = (root / name / "train.log").read_text().strip().splitlines()
                rec["status"], rec["error"] = "failed", lines[-1] if lines else ""
                log(f"sweep: {name} failed (exit {proc.returncode}): {rec['error']}")
    save()
    return list(records.values())
