"""Prepared datasets as domains: batches are a pure function of (seed, step) whatever the
process count, any step resumes, held-out documents never reach a training row, weights follow
token counts, and a broken dataset is one clear line."""

import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from genjax.data import DataError, build_data
from genjax.data.prepare import prepare
from genjax.data.tokenizers import HuggingFaceTokenizer
from tests.conftest import CONFIGS, ROOT
from tests.data.corpus import prepare_two_datasets

FRACTION = 0.2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two datasets (web: 600 documents, code: 300) and the tokenizer."""
    root = tmp_path_factory.mktemp("prepared")
    docs, tok_file = prepare_two_datasets(root, 900, FRACTION)
    return root, docs, tok_file


def config_for(tiny_config, prepared, names=("web", "code")):
    root, _, tok_file = prepared
    tiny_config.data.domains = {}
    tiny_config.data.update(tokenizer="huggingface", tokenizer_file=tok_file,
                            prepared=",".join(str(root / n) for n in names))
    tiny_config.model.vocab_size = 304
    return tiny_config


def test_batches_are_the_same_for_every_process_count_and_resume(tiny_config, prepared):
    data = build_data(config_for(tiny_config, prepared))
    B = 8
    for start in (0, 7):
        whole = [data.train_batch(s, B) for s in range(start, start + 5)]
        for procs in (1, 2, 4):
            local = B // procs
            its = [data.train_batches(B, start, (p * local, (p + 1) * local))
                   for p in range(procs)]
            for s, expect in zip(range(start, start + 5), whole):
                parts = [next(it) for it in its]
                for key in expect:
                    np.testing.assert_array_equal(
                        np.concatenate([p[key] for p in parts]), expect[key],
                        err_msg=f"{key} step {s} with {procs} processes")


def test_weights_follow_token_counts(tiny_config, prepared):
    root = prepared[0]
    data = build_data(config_for(tiny_config, prepared))
    tokens = [sum(os.path.getsize(f) for f in (root / n).glob("train-*.bin")) // 2
              for n in ("web", "code")]
    assert data.names == ["web", "code"]
    np.testing.assert_allclose(data.weights, [2 * t / sum(tokens) for t in tokens], rtol=1e-12)
    domain = np.concatenate([data.train_batch(s, 64)["domain"] for s in range(40)])
    share = np.mean(domain == 0)  # 2,560 rows: binomial sd 0.009
    assert abs(share - tokens[0] / sum(tokens)) < 0.03


def test_heldout_documents_never_reach_the_first_1000_steps(tiny_config, prepared):
    _, docs, _ = prepared
    data = build_data(config_for(tiny_config, prepared))
    held = {i for i, d in enumerate(docs) if int.from_bytes(hashlib.blake2b(
        d.encode(), digest_size=8).digest(), "little") / 2.0**64 < FRACTION}
    assert 100 < len(held) < 260
    tok, seen = data.tokenizer, set()
    it = data.train_batches(8, 0)
    for _ in range(1000):
        for row in next(it)["inputs"]:
            seen |= {int(m) for m in re.findall(r"#(\d+)#", tok.decode(row))}
    assert len(seen) > 500 and not seen & held
    rows = data.heldout_rows(16)
    heldout_seen = {int(m) for row in rows["inputs"]
                    for m in re.findall(r"#(\d+)#", tok.decode(row))}
    assert heldout_seen and heldout_seen <= held


def train_cli(workdir, *overrides):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-m", "genjax.cli", "train", "--config",
                           str(CONFIGS / "prepared.py"), "--workdir", str(workdir),
                           "--config.train.steps=2", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # 23 s: a subprocess per broken dataset
def test_broken_datasets_are_one_line_and_write_nothing(tiny_config, prepared, tmp_path, gcs):
    root, _, tok_file = prepared
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root / "web", bad)
    victim = sorted(bad.glob("train-*.bin"))[1]
    base = [f"--config.data.tokenizer_file={tok_file}"]
    cases = []
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 2)
    cases.append(([f"--config.data.prepared={bad}", "--config.model.vocab_size=304"],
                  f"prepared data shard {victim} is corrupt"))
    cases.append(([f"--config.data.prepared={root / 'web'}", "--config.model.vocab_size=256"],
                  f"{root / 'web'} was tokenized with a vocabulary of 300, more than "
                  "model.vocab_size=256"))
    cases.append(([f"--config.data.prepared={tmp_path / 'nothing'}",
                   "--config.model.vocab_size=304"], "no manifest.json"))
    cases.append((["--config.data.prepared=gs://no-such-bucket/web",
                   "--config.model.vocab_size=304"], "gs://no-such-bucket/web"))
    for overrides, message in cases:
        r = train_cli(tmp_path / "run", *base, *overrides)
        assert r.returncode == 2 and message in r.stderr, (message, r.stderr[-1500:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("genjax train: error:") and "Traceback" not in r.stderr
        assert not (tmp_path / "run").exists()
    victim.unlink()
    with pytest.raises(DataError, match=f"prepared data shard missing: {victim}"):
        config_for(tiny_config, prepared).data.prepared = str(bad)
        build_data(tiny_config)



def test_a_dataset_in_a_bucket_reads_like_a_local_one(tiny_config, prepared, gcs):
    from genjax import paths

    root, _, tok_file = prepared
    for name in ("a.jsonl", "b.txt"):  # inputs in the bucket too, found by a gs:// glob
        (paths.as_path("gs://genjax-test/raw") / name).write_bytes((root / name).read_bytes())
    manifest = prepare(["gs://genjax-test/raw/*.jsonl", "gs://genjax-test/raw/b.txt"],
                       "gs://genjax-test/tok/web", HuggingFaceTokenizer(tok_file),
                       heldout_fraction=FRACTION, shard_tokens=2000, progress=False)
    assert manifest["inputs"] == ["gs://genjax-test/raw/a.jsonl", "gs://genjax-test/raw/b.txt"]
    local = build_data(config_for(tiny_config, prepared, names=("web",)))
    tiny_config.data.prepared = "gs://genjax-test/tok/web"
    remote = build_data(tiny_config)
    for step in (0, 3, 11):
        a, b = local.train_batch(step, 8), remote.train_batch(step, 8)
        for key in a:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"{key} step {step}")
    np.testing.assert_array_equal(remote.heldout_rows(4)["inputs"],
                                  local.heldout_rows(4)["inputs"])
