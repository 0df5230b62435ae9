"""Tokenizers: byte-level by default, a local sentencepiece model as an option."""

from __future__ import annotations

import pathlib
from typing import Protocol

import numpy as np


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids) -> str: ...

    def token_bytes(self) -> np.ndarray: ...  # [vocab] UTF-8 bytes per token (bits per byte)


class ByteTokenizer:
    """UTF-8 bytes are ids 0..255; then PAD, BOS, EOS."""

    vocab_size = 259
    pad_id, bos_id, eos_id = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self) -> np.ndarray:
        """[vocab] UTF-8 bytes each token stands for (specials: 0), for bits per byte."""
        return np.concatenate([np.ones(256), np.zeros(self.vocab_size - 256)]).astype(np.float32)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in np.asarray(ids).ravel() if int(i) < 256).decode(
            "utf-8", errors="replace")


class SentencePieceTokenizer:
    def __init__(self, model_path: str):
        import sentencepiece

        if not pathlib.Path(model_path).is_file():
            raise FileNotFoundError(f"sentencepiece model not found: {model_path}")
        self._sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self.vocab_size = self._sp.vocab_size()
        self.eos_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else 0
        self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def token_bytes(self) -> np.ndarray:
        """[vocab] UTF-8 bytes of each piece ("\u2581" a space, byte pieces 1, control and
        unknown pieces 0), for bits per byte."""
        sp, out = self._sp, np.zeros(self.vocab_size, np.float32)
        for i in range(self.vocab_size):
            if sp.is_control(i) or sp.is_unknown(i):
                continue
            out[i] = 1.0 if sp.is_byte(i) else len(sp.id_to_piece(i).replace("\u2581", " ")
                                                    .encode("utf-8"))
        return out

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in np.asarray(ids).ravel()])


def make_tokenizer(data_cfg) -> Tokenizer:
    if data_cfg.tokenizer == "byte":
        return ByteTokenizer()
    if data_cfg.tokenizer == "sentencepiece":
        return SentencePieceTokenizer(data_cfg.sentencepiece_model)
    raise ValueError(f"config key 'data.tokenizer' must be byte or sentencepiece, "
                     f"got {data_cfg.tokenizer!r}")
