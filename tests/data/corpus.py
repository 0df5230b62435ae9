"""A small corpus and a Hugging Face BPE tokenizer trained on it, here, for the prepared-data
tests: every document ends with a unique marker `#N#`, so that any row can say which
documents it holds."""

import json

import numpy as np

WORDS = "the a cat dog runs sleeps near over red blue quickly slowly and then".split()


def documents(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 30)))) + f" #{i}#" for i in range(n)]


def train_tokenizer(path, docs: list[str], vocab_size: int = 300) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return str(path)


def write_inputs(root, docs: list[str]) -> list[str]:
    """The documents as a JSONL file, a text file and a parquet file (in that order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    third = len(docs) // 3
    (root / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:third]))
    (root / "b.txt").write_text("\n".join(docs[third:2 * third]) + "\n")
    pq.write_table(pa.table({"text": docs[2 * third:]}), root / "c.parquet")
    return [str(root / "a.jsonl"), str(root / "b.txt"), str(root / "c.parquet")]


def prepare_two_datasets(root, n_docs: int, heldout_fraction: float) -> tuple[list[str], str]:
    """`web` (the JSONL and text thirds of `n_docs` documents) and `code` (the parquet third)
    prepared under root, with a tokenizer trained on them: (documents, tokenizer file)."""
    from genjax.data.prepare import prepare
    from genjax.data.tokenizers import HuggingFaceTokenizer

    docs = documents(n_docs)
    tok_file = train_tokenizer(root / "tok.json", docs)
    inputs = write_inputs(root, docs)
    tok = HuggingFaceTokenizer(tok_file)
    for name, files in (("web", inputs[:2]), ("code", inputs[2:])):
        prepare(files, str(root / name), tok, heldout_fraction=heldout_fraction,
                shard_tokens=2000, progress=False)
    return docs, tok_file
