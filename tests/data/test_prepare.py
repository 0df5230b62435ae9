"""`genjax data prepare`: shards equal an independent tokenization, the split follows an
independent hash, an interrupted run resumes to the same bytes, bad input is one line."""

import hashlib
import json
import subprocess

import numpy as np
import pytest
import tokenizers

from genjax import cli
from genjax.data.prepare import prepare
from genjax.data.shards import MANIFEST
from genjax.data.sources import DataError
from genjax.data.tokenizers import HuggingFaceTokenizer
from tests.data.corpus import documents, train_tokenizer, write_inputs

FRACTION = 0.2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = documents(900)
    return root, docs, write_inputs(root, docs), train_tokenizer(root / "tok.json", docs)


def held(doc: str) -> bool:  # independent of genjax: blake2b-64 of the text < fraction
    h = int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=8).digest(), "little")
    return h / 2.0**64 < FRACTION


def split_streams(out, manifest) -> dict[str, np.ndarray]:
    return {split: np.concatenate([np.fromfile(out / s["file"], "<u2")
                                   for s in manifest["shards"] if s["split"] == split])
            for split in ("train", "heldout")}


def test_shards_equal_an_independent_tokenization(corpus, tmp_path):
    _, docs, inputs, tok_file = corpus
    manifest = prepare(inputs, str(tmp_path / "ds"), HuggingFaceTokenizer(tok_file),
                       heldout_fraction=FRACTION, shard_tokens=3000, progress=False)
    ref = tokenizers.Tokenizer.from_file(tok_file)
    eos = ref.token_to_id("<|endoftext|>")
    expect = {"train": [], "heldout": []}
    for doc in docs:  # inputs hold the documents in order: jsonl, txt, parquet
        expect["heldout" if held(doc) else "train"] += ref.encode(doc).ids + [eos]
    got = split_streams(tmp_path / "ds", manifest)
    for split in expect:
        np.testing.assert_array_equal(got[split], expect[split])
    totals = manifest["totals"]
    assert totals["documents"] == len(docs) and totals["heldout_documents"] == sum(map(held, docs))
    assert totals["tokens"] == len(expect["train"])
    assert totals["heldout_tokens"] == len(expect["heldout"])
    assert totals["bytes"] == sum(len(d.encode()) for d in docs)
    assert len([s for s in manifest["shards"] if s["split"] == "train"]) > 3  # rotated
    assert manifest["tokenizer"]["vocab_size"] == ref.get_vocab_size()


class FailingTokenizer(HuggingFaceTokenizer):
    """Raises on its k-th batch: an interruption at a fixed point of the second input."""

    def __init__(self, path, fail_at: int):
        super().__init__(path)
        self.calls, self.fail_at = 0, fail_at

    def encode_batch(self, texts):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().encode_batch(texts)


def test_an_interrupted_prepare_resumes_to_the_same_bytes(corpus, tmp_path):
    _, _, inputs, tok_file = corpus
    settings = dict(heldout_fraction=FRACTION, shard_tokens=3000, progress=False)
    ref = prepare(inputs, str(tmp_path / "ref"), HuggingFaceTokenizer(tok_file), **settings)
    with pytest.raises(KeyboardInterrupt):  # 300 docs per file, 256 per batch: batch 3 is
        prepare(inputs, str(tmp_path / "ds"), FailingTokenizer(tok_file, 3), **settings)
    partial = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert not partial["complete"] and list(partial["sources"]) == inputs[:1]
    with pytest.raises(DataError, match="incomplete"):
        from genjax.data.shards import read_manifest

        read_manifest(str(tmp_path / "ds"))
    done = prepare(inputs, str(tmp_path / "ds"), HuggingFaceTokenizer(tok_file), **settings)
    assert done == {**ref, "inputs": ref["inputs"]}
    for shard in ref["shards"]:
        assert (tmp_path / "ds" / shard["file"]).read_bytes() == \
            (tmp_path / "ref" / shard["file"]).read_bytes()
    with pytest.raises(DataError, match="other settings .heldout_fraction"):
        prepare(inputs, str(tmp_path / "ds"), HuggingFaceTokenizer(tok_file),
                heldout_fraction=0.5, progress=False)


def test_bad_input_is_one_line_and_writes_nothing(corpus, tmp_path, capsys):
    root, _, inputs, tok_file = corpus
    out = tmp_path / "out"

    def prepare_cli(*args):  # the command line, in this process: exit status and stderr
        code = cli.main(["genjax", "data", "prepare", *args])
        return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)

    cases = {
        "input file not found: ": [str(root / "missing.jsonl")],
        "input pattern matches no file: ": [str(root / "*.csv")],
        "unknown file type": [tok_file],
    }
    for message, args in cases.items():
        r = prepare_cli(*args, "--out", str(out), "--tokenizer_file", tok_file)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    r = prepare_cli(*inputs, "--out", str(out), "--tokenizer_file", str(root / "nope.json"))
    assert r.returncode == 2 and "tokenizer file not found" in r.stderr and not out.exists()
    bad = root / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    r = prepare_cli(str(bad), "--out", str(out), "--tokenizer_file", tok_file)
    assert r.returncode == 2 and f"{bad}:2: row has no string field 'text'" in r.stderr
