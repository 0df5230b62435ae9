"""Test session setup: 8 virtual CPU devices, CPU only, before jax is imported anywhere."""

import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
