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


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A Google Cloud Storage emulator (gcp-storage-emulator from PyPI, with the generation
    preconditions tests/gcs_emulator.py adds) on loopback with the bucket `genjax-test`, and
    this process's environment pointed at it: tensorstore
    (TENSORSTORE_GCS_HTTP_URL, read once per process, so set before any gs:// access) and
    gcsfs, which etils.epath and orbax use (STORAGE_EMULATOR_HOST). Yields the environment
    for subprocesses."""
    import socket
    import subprocess
    import time

    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        pytest.fail("gcp-storage-emulator is not installed (pip install -e '.[test]')")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("gcs") / "emulator.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "tests.gcs_emulator", "--port", str(port),
                             "--bucket", "genjax-test"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    env = {"TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
           "STORAGE_EMULATOR_HOST": url,
           # gcsfs would ask GCS's control-plane API (which no emulator has) for the bucket
           # layout on every open, and warn each time
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"the GCS emulator did not start (see {log.name})")
            time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.kill()
    proc.wait()
    log.close()
