"""Probe files in the published mode-hopping shape: loading, K-shot sampling, errors."""

import json
import random

import numpy as np
import pytest

from genjax.data.tokenizers import ByteTokenizer
from genjax.hooks.probes import ProbeError, item_answers, load_probe_file, pack_items

DEMOS = [{"split": "demo", "prompt": f"q{i}", "answer": f"a{i}", "label": i % 2}
         for i in range(6)]
TESTS = [{"split": "test", "prompt": f"t{i}", "correct_answer": "yes",
          "incorrect_answer": "no", "source": "meta"} for i in range(3)]


def write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_zero_shot_and_ordered(tmp_path):
    f = write(tmp_path / "p.jsonl", DEMOS + TESTS)
    items = load_probe_file(f, "fam", shots=2, sampling="none")
    assert [it.prompt for it in items] == ["t0", "t1", "t2"]
    assert (items[0].correct, items[0].incorrect, items[0].family) == ("yes", "no", "fam")
    ordered = load_probe_file(f, "fam", shots=2, sampling="ordered", joiner=" | ")
    assert ordered[1].prompt == "q0 a0 | q1 a1 | t1"


def test_random_sampling_follows_python_random(tmp_path):
    f = write(tmp_path / "p.jsonl", DEMOS + TESTS)
    items = load_probe_file(f, "fam", shots=3, sampling="random", seeds=2)
    assert len(items) == 6  # 3 test rows x 2 seeds
    for seed in range(2):
        rng = random.Random(seed)
        for i in range(3):
            picked = rng.sample(DEMOS, 3)
            expected = "\n".join([f"{d['prompt']} {d['answer']}" for d in picked] + [f"t{i}"])
            assert items[seed * 3 + i].prompt == expected


def test_balanced_sampling_has_half_of_each_label(tmp_path):
    f = write(tmp_path / "p.jsonl", DEMOS + TESTS)
    for it in load_probe_file(f, "fam", shots=4, sampling="balanced"):
        demo_prompts = [block.split(" ")[0] for block in it.prompt.split("\n")[:-1]]
        labels = [int(p[1:]) % 2 for p in demo_prompts]
        assert sorted(labels) == [0, 0, 1, 1]


def test_demo_sets_chosen_by_seed(tmp_path):
    rows = [{**d, "demo_set": 0} for d in DEMOS[:3]] + [{**d, "demo_set": 1} for d in DEMOS[3:]]
    f = write(tmp_path / "p.jsonl", rows + TESTS)
    items = load_probe_file(f, "fam", shots=1, sampling="ordered", seeds=2)
    assert items[0].prompt.startswith("q0 a0") and items[3].prompt.startswith("q3 a3")


@pytest.mark.parametrize("bad,message", [
    ("{not json", ":3: invalid JSON"),
    ({"split": "test", "prompt": "x", "correct_answer": "y"}, ":3: missing string field "
                                                               "'incorrect_answer'"),
    ({"split": "demo", "prompt": "x"}, ":3: missing string field 'answer'"),
    ({"split": "train", "prompt": "x"}, ":3: 'split' must be"),
    ([1, 2], ":3: a row must be a JSON object"),
])
def test_malformed_rows_name_the_line(tmp_path, bad, message):
    f = write(tmp_path / "bad.jsonl", [DEMOS[0], TESTS[0], bad])
    with pytest.raises(ProbeError, match=message.replace("(", r"\(")) as e:
        load_probe_file(f, "fam")
    assert str(f) in str(e.value)


def test_malformed_probe_file_from_cli(tmp_path):
    from tests.conftest import CONFIGS
    from tests.test_cli import genjax

    f = write(tmp_path / "bad.jsonl", [TESTS[0], "{oops"])
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        f"import sys\nsys.path.insert(0, {str(CONFIGS)!r})\nimport tiny\n"
        "def get_config():\n    c = tiny.with_all_hooks(tiny.get_config())\n"
        f"    c.hooks.probes.files.mine = {str(f)!r}\n    return c\n")
    r = genjax("train", "--config", str(cfg), "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2
    assert f"{f}:2: invalid JSON" in r.stderr


def test_packed_layout():
    """Each answer is its own sequence `context + answer` (inputs, next-token targets), packed
    first-fit into rows, positions restarting, the loss mask on the answer predictions."""
    from genjax.data.sources import ProbeItem

    tok = ByteTokenizer()
    items = [ProbeItem("f", "ab", "xy", "z"), ProbeItem("f", "abcd", "x", "zz")]
    p = pack_items(items, tok, row_len=12)
    # sequences (slot: tokens): 0 "ab xy" (4 after the shift), 1 "ab z" (3), 2 "abcd x" (5),
    # 3 "abcd zz" (6); first fit into rows of 12: row 0 holds 0, 1, 2; row 1 holds 3
    assert p["inputs"].shape == (2, 12)
    assert list(p["segments"][0]) == [1] * 4 + [2] * 3 + [3] * 5
    assert list(p["segments"][1]) == [1] * 6 + [0] * 6
    assert list(p["slot"][0]) == [0] * 4 + [1] * 3 + [2] * 5
    seq = tok.encode("ab xy")
    assert list(p["inputs"][0, :4]) == seq[:-1] and list(p["targets"][0, :4]) == seq[1:]
    assert list(p["positions"][0]) == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]
    # the loss mask covers the positions predicting answer tokens: "xy" after "ab " (3 tokens)
    assert list(p["loss_mask"][0, :4]) == [0, 0, 1, 1]
    assert list(p["loss_mask"][0, 4:7]) == [0, 0, 1]
    assert p["loss_mask"][1].sum() == 2
    # a sequence longer than row_len: rows of the longest's length, rounded up
    assert pack_items(items, tok, row_len=4, length_multiple=8)["inputs"].shape[1] == 8


# ------------------------------------------------------------- scoring cannot be won by length


def frequency_logits(data, steps: int = 30, batch: int = 64):
    """log p(token) and log p(token | previous token) from training rows (add-one): a model
    that knows only token frequencies."""
    v = data.tokenizer.vocab_size
    uni, bi = np.ones(v), np.ones((v, v))
    for s in range(steps):
        b = data.train_batch(s, batch)
        np.add.at(uni, b["targets"].ravel(), 1)
        np.add.at(bi, (b["inputs"].ravel(), b["targets"].ravel()), 1)
    return np.log(uni / uni.sum()), np.log(bi / bi.sum(axis=1, keepdims=True))


def hook_scores(items, tokenizer, logits, bigram: bool):
    """The probe hook's own metrics with a frequency model standing in for the LM."""
    import jax
    import jax.numpy as jnp

    from genjax.hooks.probes import ProbeHook

    hook = ProbeHook(items, tokenizer)
    table = jnp.asarray(logits, jnp.float32)

    def apply_fn(params, tokens, positions=None, segments=None):
        if bigram:  # the logits at each position follow the token there
            return table[tokens]
        return jnp.broadcast_to(table, tokens.shape + table.shape)

    out = hook.compute(None, apply_fn, jax.tree.map(jnp.asarray, hook.data()), None)
    return hook.families, np.asarray(out["probes/accuracy"]), np.asarray(out["probes/logp_margin"])


def prefix_items(items, tokenizer) -> list[int]:
    """Indices of the items whose scored answers (terminator included) are token prefixes of
    each other: their mean token probabilities compare answers of different lengths."""
    out = []
    for i, it in enumerate(items):
        _, good, bad = item_answers(tokenizer, it)
        short, long = sorted((good, bad), key=len)
        if long[: len(short)] == short:
            out.append(i)
    return out


@pytest.mark.parametrize("config_name", ["tiny", "icl_vs_iwl", "pattern_vs_compute"])
def test_a_frequency_model_sits_at_chance_on_every_builtin_family(config_name):
    """Unigram and bigram frequencies of the training text cannot tell correct from
    incorrect: answer length (prefix answers such as jump/jumps, 1/17) and label frequency
    explain no family's accuracy. 400 items: |accuracy - 0.5| <= 3.5 binomial sd."""
    from genjax.config import load
    from genjax.data import build_data
    from tests.conftest import CONFIGS

    data = build_data(load(CONFIGS / f"{config_name}.py"))
    items = data.probe_items(400)
    assert prefix_items(items, data.tokenizer) == []  # terminated: no answer is a prefix
    unigram, bigram = frequency_logits(data)
    tolerance = 3.5 * np.sqrt(0.25 / 400)
    for logits, is_bigram in ((unigram, False), (bigram, True)):
        families, acc, _ = hook_scores(items, data.tokenizer, logits, is_bigram)
        off = {f: float(a) for f, a in zip(families, acc) if abs(a - 0.5) > tolerance}
        assert not off, (config_name, is_bigram, off)


def test_answers_are_scored_with_their_terminator():
    from genjax.data.sources import ProbeItem
    from genjax.hooks.probes import answer_tokens

    tok = ByteTokenizer()
    bare = ProbeItem("f", "the dog", "runs", "run")
    joined = ProbeItem("f", "the dog", "runs", "run", terminator="\n")
    eos = ProbeItem("f", "the dog", "runs", "run", terminator_eos=True)
    assert prefix_items([bare, joined, eos], tok) == [0]
    assert answer_tokens(tok, "the dog", "run", "\n")[1] == tok.encode("run\n")
    assert answer_tokens(tok, "the dog", "run", "", True)[1] == tok.encode("run") + [tok.eos_id]
    p = pack_items([joined], tok)
    scored = p["targets"][p["loss_mask"] > 0]  # the answer tokens, correct then incorrect
    assert tok.decode(scored) == "runs\nrun\n"


def test_builtin_families_use_the_domains_joiner_as_terminator(tiny_config):
    from genjax.data import build_data

    items = build_data(tiny_config).probe_items(4)
    assert {it.terminator for it in items} == {"\n"}
    assert {it.family for it in items} == {"arith/repeat", "arith/successor",
                                           "grammar/agreement", "kv/context"}


def test_prefix_answers_warn_naming_the_file_and_line(tmp_path):
    rows = [{"split": "test", "prompt": "the dog", "correct_answer": "runs",
             "incorrect_answer": "run"},
            {"split": "test", "prompt": "1+0=", "correct_answer": "1",
             "incorrect_answer": "17"},
            {"split": "test", "prompt": "x", "correct_answer": "yes", "incorrect_answer": "no"}]
    f = write(tmp_path / "p.jsonl", rows)
    notes = []
    load_probe_file(f, "fam", note=notes.append)
    assert len(notes) == 1 and f"{f}:1" in notes[0] and f"{f}:2" in notes[0]
    assert f"{f}:3" not in notes[0] and "terminator" in notes[0]
    notes.clear()
    items = load_probe_file(f, "fam", terminator="\n", note=notes.append)
    assert not notes and items[0].terminator == "\n"


def test_replicates_share_an_item_label(tmp_path):
    from genjax.hooks.probes import item_labels

    f = write(tmp_path / "p.jsonl", DEMOS + TESTS)
    items = load_probe_file(f, "fam", shots=2, sampling="random", seeds=2)
    assert item_labels(items) == ["fam/0.0", "fam/1.0", "fam/2.0", "fam/0.1", "fam/1.1",
                                  "fam/2.1"]
    single = load_probe_file(f, "fam", shots=2, sampling="random", seeds=1)
    assert item_labels(single) == ["fam/0", "fam/1", "fam/2"]


def test_families_are_namespaced_by_domain_and_clashes_refused(tiny_config, tmp_path):
    from genjax.data import build_data
    from genjax.hooks.registry import probe_items

    tiny_config.data.domains = {"kv": {"kind": "kv_lookup"},
                                "kv_long": {"kind": "kv_lookup", "num_pairs": 8}}
    tiny_config.hooks.probes.builtin_items = 4
    data = build_data(tiny_config)
    families = [it.family for it in probe_items(tiny_config, data)]
    assert families == ["kv/context"] * 4 + ["kv_long/context"] * 4
    tiny_config.hooks.probes.files["kv/context"] = str(write(tmp_path / "p.jsonl", TESTS))
    with pytest.raises(ProbeError, match="kv/context"):
        probe_items(tiny_config, data)
