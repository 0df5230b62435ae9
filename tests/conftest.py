"""Test session setup: 8 virtual CPU devices, CPU only, before jax is imported anywhere."""

import os
import pathlib
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Persistent compilation cache (also inherited by the CLI subprocesses): the tests compile the
# same few programs many times; on 2 cores this cuts each repeat from ~20 s to ~1 s.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"genjax-test-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
sys.path.insert(0, str(CONFIGS))


@pytest.fixture
def tiny_config():
    from genjax.config import load

    return load(CONFIGS / "tiny.py")


@pytest.fixture
def tiny_hooks_config(tiny_config):
    import tiny

    return tiny.with_all_hooks(tiny_config)
