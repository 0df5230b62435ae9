"""Bits per byte: summed loss over the UTF-8 bytes of the targets, so that byte-level and
sentencepiece runs compare."""

import math

import numpy as np
import pytest

from genjax.data.tokenizers import ByteTokenizer
from genjax.hooks.domains import HeldoutHook, TrainDomainsHook, bits_per_byte


def test_bits_per_byte_counts_bytes_not_tokens():
    tok = ByteTokenizer()
    table = tok.token_bytes()
    assert table.shape == (tok.vocab_size,) and table[:256].sum() == 256
    assert table[tok.eos_id] == 0 and table[tok.pad_id] == 0
    targets = np.array([[104, 105, tok.eos_id, 0], [97, 98, 99, 100]], np.int32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    loss = np.full(targets.shape, 2.0, np.float32)  # nats per token
    domain = np.array([0, 1], np.int32)
    bpb = np.asarray(bits_per_byte(loss, targets, mask, domain, 2, table))
    # domain 0: 3 tokens (6 nats) over 2 bytes (EOS has none); domain 1: 8 nats over 4 bytes
    np.testing.assert_allclose(bpb, [6 / (2 * math.log(2)), 8 / (4 * math.log(2))], rtol=1e-6)


def test_hooks_declare_bpb_only_with_a_byte_table():
    rows = {k: np.zeros((2, 4), np.int32) for k in ("inputs", "targets")}
    rows.update(loss_mask=np.ones((2, 4), np.float32), domain=np.zeros(2, np.int32))
    names = lambda hook: [s.name for s in hook.schema()]
    assert "heldout/bpb" not in names(HeldoutHook(rows, ["d"]))
    with_table = HeldoutHook(rows, ["d"], token_bytes=ByteTokenizer().token_bytes())
    assert "heldout/bpb" in names(with_table)
    assert next(s for s in with_table.schema() if s.name == "heldout/bpb").unit == "bits/byte"
    assert "train_domains/bpb" in names(TrainDomainsHook(["d"], token_bytes=np.ones(3)))


def test_sentencepiece_piece_bytes(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    from genjax.data.tokenizers import SentencePieceTokenizer

    corpus = tmp_path / "c.txt"
    words = ["alpha", "beta", "gamma", "délta"]
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(200)) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "m"),
                                   vocab_size=30, model_type="bpe", pad_id=3, bos_id=-1,
                                   eos_id=2, unk_id=1, byte_fallback=False)
    tok = SentencePieceTokenizer(str(tmp_path / "m.model"))
    table = tok.token_bytes()
    assert table[tok.eos_id] == 0
    text = "gamma délta alpha beta"
    # every piece's bytes, the leading word-boundary marker counting as a space
    assert table[tok.encode(text)].sum() == len((" " + text).encode("utf-8"))
