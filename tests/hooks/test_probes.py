"""Probe files in the published mode-hopping shape: loading, K-shot sampling, errors."""

import json
import random

import numpy as np
import pytest

from genjax.data.tokenizers import ByteTokenizer
from genjax.hooks.probes import ProbeError, encode_items, load_probe_file, probe_mask

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


def test_shared_context_layout_and_mask():
    from genjax.data.sources import ProbeItem

    items = [ProbeItem("f", "ab", "xy", "z"), ProbeItem("f", "abcd", "x", "zz")]
    enc = encode_items(items, ByteTokenizer())
    tok = ByteTokenizer()
    # context "ab " is left-padded to the longest context "abcd " (5 tokens)
    assert list(enc["tokens"][0, 2:5]) == tok.encode("ab ")
    assert list(enc["tokens"][0, 5:7]) == tok.encode("xy")
    assert list(enc["tokens"][0, 7:8]) == tok.encode("z")
    assert list(enc["positions"][0, 5:7]) == [3, 4] and enc["positions"][0, 7] == 3
    assert enc["predictor"].shape == (2, 4)  # the answer region: 2 x the longest answer
    assert list(enc["predictor"][0, 0:2]) == [4, 5] and enc["predictor"][0, 2] == 4
    mask = np.asarray(probe_mask(enc["segment"]))[0]
    assert mask[7, 2:5].all() and not mask[7, 5:7].any()  # incorrect sees context, not correct
    assert mask[6, 5] and not mask[5, 6]  # causal inside an answer
    assert not mask[3, 0]  # context does not see padding
