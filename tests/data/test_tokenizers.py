"""Tokenizers: byte-level round trip; a local sentencepiece model drives a text domain."""

import numpy as np
import pytest

from genjax.data import build_data
from genjax.data.tokenizers import ByteTokenizer


def test_byte_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode("héllo\n")
    assert max(ids) < 256 and tok.decode(ids + [tok.pad_id, tok.eos_id]) == "héllo\n"


def test_sentencepiece_text_domain(tiny_config, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta"]
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(300)) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "m"),
                                   vocab_size=40, model_type="bpe", pad_id=3,
                                   bos_id=-1, eos_id=2, unk_id=1)
    tiny_config.data.domains = {}
    tiny_config.data.update(tokenizer="sentencepiece", files=str(corpus),
                            sentencepiece_model=str(tmp_path / "m.model"))
    data = build_data(tiny_config)
    assert data.tokenizer.vocab_size == 40 and data.names == ["corpus"]
    batch = data.train_batch(0, 4)
    assert batch["inputs"].max() < 40
    inner_words = data.tokenizer.decode(batch["inputs"][0]).split()[1:-1]  # ends may be cut
    assert inner_words and set(inner_words) <= set(words)


def test_missing_sentencepiece_model_is_clear(tiny_config, tmp_path):
    tiny_config.data.update(tokenizer="sentencepiece", sentencepiece_model=str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="sentencepiece model not found"):
        build_data(tiny_config)
