"""Data: deterministic from the seed, held-out never trained on, per-process slices."""

import hashlib

import numpy as np
import pytest

from genjax.data import HELDOUT, TRAIN, DataError, build_data
from genjax.data.sources import is_heldout


def problems(data, rows):
    """Complete problem lines in token rows (the first and last line of a row may be cut)."""
    out = set()
    for r in rows:
        lines = data.tokenizer.decode(r).split("\n")
        out.update(lines[1:-1])
    return out


def test_same_seed_same_batches_other_seed_differs(tiny_config):
    a, b = build_data(tiny_config), build_data(tiny_config)
    for step in (0, 7):
        x, y = a.train_batch(step, 8), b.train_batch(step, 8)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    tiny_config.seed = 1
    c = build_data(tiny_config)
    assert not np.array_equal(a.train_batch(0, 8)["inputs"], c.train_batch(0, 8)["inputs"])


def test_iterator_resumes_at_step_and_splits_processes(tiny_config):
    data = build_data(tiny_config)
    whole = data.train_batch(5, 8)
    it = data.train_batches(8, start_step=5)
    np.testing.assert_array_equal(next(it)["inputs"], whole["inputs"])
    halves = [next(data.train_batches(8, 5, (4 * p, 4 * p + 4)))["inputs"] for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), whole["inputs"])


def test_heldout_problems_never_in_training(tiny_config):
    data = build_data(tiny_config)
    train_rows = np.concatenate([data.train_batch(s, 8)["inputs"] for s in range(40)])
    held = data.heldout_rows(60)
    held_problems = problems(data, held["inputs"])
    train_problems = problems(data, train_rows)
    assert len(held_problems) >= 40 and len(train_problems) >= 150
    assert not held_problems & train_problems
    frac = tiny_config.data.heldout_fraction
    assert all(is_heldout(p, frac) for p in held_problems)
    assert not any(is_heldout(p, frac) for p in train_problems)


def test_modular_arithmetic_answers_are_correct(tiny_config):
    data = build_data(tiny_config)
    arith = data.domains[data.names.index("arith")]
    for line in problems(data, [arith.row(i, TRAIN)[0] for i in range(20)]):
        lhs, answer = line.split("= ")
        a, b = map(int, lhs.split("+"))
        assert int(answer) == (a + b) % 23


def test_text_files_become_domains(tiny_config, tmp_path):
    docs = [f"document number {i} says hello" for i in range(40)]
    (tmp_path / "web.txt").write_text("\n".join(docs) + "\n")
    (tmp_path / "code.jsonl").write_text(
        "\n".join(f'{{"text": "def f{i}(): return {i}"}}' for i in range(30)) + "\n")
    tiny_config.data.domains = {}
    tiny_config.data.files = str(tmp_path / "*.txt") + "," + str(tmp_path / "code.jsonl")
    data = build_data(tiny_config)
    assert data.names == ["web", "code"]
    held = data.heldout_rows(1)
    train_text = " ".join(data.tokenizer.decode(r) for r in data.train_batch(0, 8)["inputs"])
    for row in held["inputs"]:
        for doc in data.tokenizer.decode(row).split(chr(0xFFFD)):
            if len(doc) > 20:
                assert doc not in train_text
    assert data.domains[0].num_rows(HELDOUT) >= 1
    # mixed by training tokens (bytes + EOS of the documents hashed into training), mean 1.0
    codes = [f"def f{i}(): return {i}" for i in range(30)]
    held = lambda d: int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8).digest(),
                                    "little") / 2.0**64 < tiny_config.data.heldout_fraction
    tokens = [sum(len(d.encode()) + 1 for d in ds if not held(d)) for ds in (docs, codes)]
    np.testing.assert_allclose(data.weights, [2 * t / sum(tokens) for t in tokens], rtol=1e-12)
    tiny_config.data.domains = {"web": {"kind": "text", "path": str(tmp_path / "web.txt"),
                                        "weight": 3.0}}
    tiny_config.data.files = str(tmp_path / "code.jsonl")
    assert build_data(tiny_config).weights == [3.0, 1.0]  # explicit weight kept; one by size


@pytest.mark.parametrize("content,message", [
    (None, "data file not found"),
    ('{"text": 1}\n', ":1: row has no string field 'text'"),
    ("{bad\n", ":1: invalid JSON"),
    ("", "empty"),
])
def test_bad_text_files(tiny_config, tmp_path, content, message):
    path = tmp_path / "corpus.jsonl"
    if content is not None:
        path.write_text(content)
    tiny_config.data.files = str(path)
    with pytest.raises(DataError, match=message):
        build_data(tiny_config)


def test_unknown_domain_option_and_kind(tiny_config):
    tiny_config.data.domains.arith.modulo = 5
    with pytest.raises(DataError, match="modulo"):
        build_data(tiny_config)
    tiny_config.data.domains = {"x": {"kind": "nope"}}
    with pytest.raises(DataError, match="data.domains.x.kind"):
        build_data(tiny_config)


def test_answer_only_loss_weights_answer_tokens(tiny_config):
    tiny_config.data.domains.arith.loss_on = "answer"
    data = build_data(tiny_config)
    arith = data.domains[data.names.index("arith")]
    tokens, weights = arith.row(3, TRAIN)
    targets = data.tokenizer.decode(tokens[1:][weights > 0])
    text = data.tokenizer.decode(tokens)
    answers = [line.split("= ")[1] for line in text.split("\n")[:-1] if "= " in line]
    assert targets.startswith("".join(answers))  # rows start at a problem; the last may be cut
    assert set(targets) <= set("0123456789")


def test_heldout_and_memorization_sizes_per_domain(tiny_hooks_config):
    from genjax.hooks.registry import build_hooks

    tiny_hooks_config.data.domains.kv.heldout_rows = 5
    tiny_hooks_config.data.domains.arith.memorization_rows = 3
    data = build_data(tiny_hooks_config)
    assert data.heldout_sizes == {"kv": 5} and data.memorization_sizes == {"arith": 3}
    hooks = {h.name: h for h in build_hooks(tiny_hooks_config, data)}
    held = np.bincount(hooks["heldout"].rows["domain"], minlength=3)
    default = max(1, tiny_hooks_config.train.batch_size // 3)
    assert held.tolist() == [default, default, 5]  # arith, grammar, kv
    mem = hooks["memorization"]
    assert np.bincount(mem.seen["domain"]).tolist() == [3, 2, 2]
    assert np.bincount(mem.fresh["domain"]).tolist() == [3, 2, 2]
    # fresh rows are not the held-out hook's rows
    held_rows = {r.tobytes() for r in hooks["heldout"].rows["inputs"]}
    assert not held_rows & {r.tobytes() for r in mem.fresh["inputs"]}
    tiny_hooks_config.data.domains.kv.heldout_rows = 0
    with pytest.raises(DataError, match="heldout_rows must be an int >= 1"):
        build_data(tiny_hooks_config)


def one_file_corpus(tmp_path, docs: int = 26):
    """The issue's case: a JSONL of a few long documents, none hashed into held-out."""
    rows, i = [], 0
    while len(rows) < docs:
        text = f"def function_{i}(x):\n    return x * {i}  # " + "pad " * 40
        if not is_heldout(text, 0.1):
            rows.append({"text": text})
        i += 1
    path = tmp_path / "stdlib.jsonl"
    import json

    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_heldout_sets_are_reported_and_small_ones_flagged(tiny_hooks_config, tmp_path):
    from genjax.hooks.registry import build_hooks

    tiny_hooks_config.data.domains = {}
    tiny_hooks_config.data.files = str(one_file_corpus(tmp_path))
    tiny_hooks_config.hooks.heldout.batch_size = 10
    tiny_hooks_config.hooks.probes.enabled = False  # a text domain has no probe families
    data = build_data(tiny_hooks_config)
    assert (data.domains[0].heldout_documents, data.domains[0].documents) == (1, 26)
    note = next(h for h in build_hooks(tiny_hooks_config, data)
                if h.name == "heldout").startup_note
    lines = note.splitlines()
    assert lines[0].startswith("held-out sets")
    assert "stdlib: 1 of 26 documents (none hashed into held-out" in lines[1]
    assert "10 rows (" in lines[1] and "distinct loss tokens" in lines[1]
    assert lines[-1].startswith("warning: domain 'stdlib'") and "min_documents=5" in lines[-1]
    tiny_hooks_config.hooks.heldout.on_small = "error"
    with pytest.raises(DataError, match="held-out set too small: domain 'stdlib'"):
        build_hooks(tiny_hooks_config, data)


def test_synthetic_heldout_summary_counts_distinct_tokens(tiny_config):
    from genjax.data.pipeline import heldout_summary

    data = build_data(tiny_config)
    rows = data.heldout_rows(4)
    for rec in heldout_summary(data, rows):
        pick = rows["domain"] == data.names.index(rec["domain"])
        assert rec["rows"] == rec["distinct_rows"] == 4
        assert rec["tokens"] == int(rows["loss_mask"][pick].sum())
        assert "documents" not in rec
