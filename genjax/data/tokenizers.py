"""Tokenizers: byte-level by default; a sentencepiece model or a Hugging Face tokenizer.json
(local or gs://) as options. `identity()` names what a prepared dataset was tokenized with, so
that a run refuses token shards made by another tokenizer."""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

import numpy as np

from genjax import paths


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids) -> str: ...

    def token_bytes(self) -> np.ndarray: ...  # [vocab] UTF-8 bytes per token (bits per byte)

    def identity(self) -> dict: ...  # kind, vocab size, and a hash of the model file


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

    def identity(self) -> dict:
        return {"kind": "byte", "vocab_size": self.vocab_size}


def _model_bytes(path: str, what: str) -> bytes:
    file = paths.as_path(path)
    if not path or not file.is_file():
        raise FileNotFoundError(f"{what} not found: {path or '(no path set)'}")
    return file.read_bytes()


class SentencePieceTokenizer:
    def __init__(self, model_path: str):
        import sentencepiece

        model = _model_bytes(model_path, "sentencepiece model")
        self._sha256 = hashlib.sha256(model).hexdigest()
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model)
        self.vocab_size = self._sp.vocab_size()
        self.eos_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else 0
        self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts)

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

    def identity(self) -> dict:
        return {"kind": "sentencepiece", "vocab_size": self.vocab_size, "sha256": self._sha256}


EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
PAD_NAMES = ("<pad>", "<|pad|>", "[PAD]")


class HuggingFaceTokenizer:
    """A Hugging Face `tokenizers` tokenizer.json. EOS: the first of `EOS_NAMES` in its
    vocabulary (or none: id 0); PAD: the first of `PAD_NAMES`, else EOS."""

    def __init__(self, path: str):
        import tokenizers

        raw = _model_bytes(path, "tokenizer file")
        self._sha256 = hashlib.sha256(raw).hexdigest()
        try:
            self._tok = tokenizers.Tokenizer.from_str(raw.decode())
        except Exception as e:  # noqa: BLE001 - the Rust side raises a plain Exception
            raise ValueError(f"{path} is not a tokenizer.json: {e}") from None
        self._byte_level = '"ByteLevel"' in json.dumps(json.loads(raw).get("decoder"))
        self.vocab_size = self._tok.get_vocab_size()
        find = lambda names: next((i for n in names if (i := self._tok.token_to_id(n))
                                   is not None), None)
        eos = find(EOS_NAMES)
        self.eos_id = 0 if eos is None else eos
        pad = find(PAD_NAMES)
        self.pad_id = self.eos_id if pad is None else pad

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many documents at once (the Rust tokenizer's threads)."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).ravel()])

    def token_bytes(self) -> np.ndarray:
        """[vocab] UTF-8 bytes per token: byte-level BPE tokens spell one byte per character
        (GPT-2's byte-to-unicode map); otherwise the token's text ("▁" a space); special
        tokens 0."""
        special = {t.content for t in self._tok.get_added_tokens_decoder().values()
                   if t.special}
        out = np.zeros(self.vocab_size, np.float32)
        for i in range(self.vocab_size):
            piece = self._tok.id_to_token(i)
            if piece is None or piece in special:
                continue
            out[i] = len(piece) if self._byte_level else len(
                piece.replace("▁", " ").encode("utf-8"))
        return out

    def identity(self) -> dict:
        return {"kind": "huggingface", "vocab_size": self.vocab_size, "sha256": self._sha256}


def make_tokenizer(data_cfg) -> Tokenizer:
    return load_tokenizer(data_cfg.tokenizer, data_cfg.sentencepiece_model
                          if data_cfg.tokenizer == "sentencepiece" else data_cfg.tokenizer_file)


def load_tokenizer(kind: str, path: str = "") -> Tokenizer:
    """`byte`, `sentencepiece` (a .model file) or `huggingface` (a tokenizer.json)."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "sentencepiece":
        return SentencePieceTokenizer(path)
    if kind == "huggingface":
        return HuggingFaceTokenizer(path)
    raise ValueError(f"tokenizer must be byte, sentencepiece or huggingface, got {kind!r}")
