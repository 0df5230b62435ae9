"""The README's embedding examples run as written (1 and 8 devices); the public API, its
docstrings and the README list agree; importing genjax changes nothing global."""

import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _examples() -> dict[str, str]:
    section = README[README.index("## Embedding genjax"):README.index("## Before paying")]
    blocks = re.findall(r"\*\*(\d)\. .*?```python\n(.*?)```", section, re.S)
    return {f"level{n}": code for n, code in blocks}


def _run(code: str, cwd, devices: int) -> str:
    (cwd / "configs").symlink_to(ROOT / "configs")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_three_examples_are_found():
    assert sorted(_examples()) == ["level1", "level2", "level3"]


@pytest.mark.parametrize("devices", [1, 8])
@pytest.mark.parametrize("level", ["level1", "level2", "level3"])
def test_readme_example_runs(level, devices, tmp_path):
    if level == "level3" and devices == 8:
        pytest.skip("the stream alone uses no devices")
    out = _run(_examples()[level], tmp_path, devices)
    if level in ("level1", "level2"):
        values = re.search(r"held-out loss per domain: \[(.*?)\]", out, re.S).group(1).split()
        assert len(values) == 3 and all(0 < float(v) < 6.0 for v in values), out
    else:
        assert (tmp_path / "runs/embed_stream/analysis/report.html").exists()
        import json

        found = json.loads((tmp_path / "runs/embed_stream/analysis/analysis.json").read_text())
        steps = found["change_points"]["my/score"]["steps"]
        assert any(abs(s - 200) <= 5 for s in steps), steps


def _documented(obj) -> bool:
    doc = inspect.getdoc(obj) or ""
    return bool(doc) and not re.match(rf"{getattr(obj, '__name__', '')}\(", doc)


def test_public_api_is_documented_and_listed():
    import genjax

    listed = re.search(r"Public API \(`genjax.__all__`\): (.*?)\.\n", README, re.S).group(1)
    assert re.findall(r"`(\w+)`", listed) == genjax.__all__
    undocumented = [n for n in genjax.__all__[1:] if not _documented(getattr(genjax, n))]
    assert not undocumented
    for sub in ("genjax.model", "genjax.hooks", "genjax.stream", "genjax.analysis",
                "genjax.data", "genjax.train"):
        module = importlib.import_module(sub)
        missing = [n for n in getattr(module, "__all__", ()) if not _documented(
            getattr(module, n))]
        assert not missing, (sub, missing)


def test_import_changes_nothing_global():
    code = """
import sys, jax
from jax._src import xla_bridge
before = dict(jax.config.values)
argv = list(sys.argv)
import genjax
for name in genjax.__all__[1:]:
    getattr(genjax, name)
import genjax.cli, genjax.tpu.compile, genjax.perf
after = dict(jax.config.values)
changed = {k for k in before if before[k] != after.get(k)}
assert not changed, changed
assert not xla_bridge.backends_are_initialized()
assert sys.argv == argv
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
