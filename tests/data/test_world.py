"""The generalization world's generators: deterministic, no held-out leakage, probes correct by
construction, and each config's rows holding exactly one problem with its answer weighted."""

import numpy as np
import pytest

from genjax.config import load
from genjax.data import HELDOUT, TRAIN, DataError, build_data
from genjax.data.sources import KINDS, is_heldout
from genjax.data.world import SYMBOLS, BurstyICL, ModularSymbols, PatternArithmetic
from tests.conftest import CONFIGS

WORLD = ("grokking", "icl_vs_iwl", "pattern_vs_compute")


def domain_of(config_name: str):
    config = load(CONFIGS / f"{config_name}.py")
    data = build_data(config)
    return data, data.domains[0]


def texts(data, domain, split: int, n: int) -> list[str]:
    return [data.tokenizer.decode(domain.row(i, split)[0]) for i in range(n)]


def test_world_kinds_are_registered():
    for cls in (ModularSymbols, BurstyICL, PatternArithmetic):
        assert KINDS[cls.kind] is cls


@pytest.mark.parametrize("name", WORLD)
def test_rows_are_deterministic_and_hold_one_problem_with_its_answers_weighted(name):
    data, domain = domain_of(name)
    again = domain_of(name)[0]
    for step in (0, 3):
        a, b = data.train_batch(step, 8), again.train_batch(step, 8)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    sep = getattr(domain, "line_sep", "\n")
    for split in (TRAIN, HELDOUT):
        for i in range(20):
            tokens, weights = domain.row(i, split)
            text = data.tokenizer.decode(tokens)
            # one problem (episode) per row, cut before the joiner: its last token is the
            # query's answer; loss on the query's answer, or on every line's answer
            answers, start = [], 0
            for line in text.split(sep):
                answers.append(start + len(line) - 1)
                start += len(line) + len(sep)
            assert answers[-1] == len(tokens) - 1 and all(text[j - 1] == " " for j in answers)
            expected = answers if domain.opt["loss_on"] == "answers" else answers[-1:]
            np.testing.assert_array_equal(np.flatnonzero(weights) + 1, expected)


def test_modular_symbols_table_split_and_answers():
    data, dom = domain_of("grokking")
    p = dom.p
    train, held = set(dom.pairs(TRAIN)), set(dom.pairs(HELDOUT))
    assert not train & held and len(train | held) == p * p
    assert all((b, a) in held for a, b in held)  # a pair and its mirror image share a split
    assert abs(len(held) / p**2 - data.domains[0].heldout_fraction) < 0.03
    seen = set()
    for split, allowed in ((TRAIN, train), (HELDOUT, held)):
        for text in texts(data, dom, split, 300):
            lhs, answer = text.split("= ")
            a, b = (SYMBOLS.index(x) for x in lhs.split("+"))
            assert (a, b) in allowed and SYMBOLS.index(answer) == (a + b) % p
            if split == TRAIN:
                seen.add((a, b))
    assert len(seen) > 200  # training covers the table's train pairs, not a few of them


def parse_icl(prompt: str) -> tuple[list[tuple[str, str]], str]:
    *items, query = prompt.split(",")
    return [tuple(item.split(" ")) for item in items], query


def test_bursty_icl_rows_use_fixed_or_relabeled_labels_and_never_novel_classes():
    data, dom = domain_of("icl_vs_iwl")
    label = dict(zip(dom.classes, dom.labels))
    novel = set(dom.novel)
    assert not novel & set(dom.classes) and len(novel) == dom.opt["novel_classes"]
    bursty = relabeled = 0
    train_texts = texts(data, dom, TRAIN, 400)
    for text in train_texts:
        items, query = parse_icl(text[: text.rindex(" ")])
        pairs = [*items, (query, text.split(" ")[-1])]
        assert not {k for k, _ in pairs} & novel
        mapping = {label[k]: v for k, v in pairs}  # memorized label -> this episode's label
        assert len(set(mapping.values())) == len(mapping)  # labels fixed or consistently permuted
        assert all(mapping[label[k]] == v for k, v in pairs)
        relabeled += any(a != b for a, b in mapping.items())
        bursty += sum(k == query for k, _ in items) >= dom.opt["burst"]
    assert abs(bursty / 400 - dom.opt["bursty"]) < 0.06  # non-bursty rarely repeats the query
    assert abs(relabeled / 400 - dom.opt["bursty"] * dom.opt["relabel"]) < 0.07
    held = texts(data, dom, HELDOUT, 100)
    assert all(is_heldout(t, dom.heldout_fraction) for t in held)
    assert not any(is_heldout(t, dom.heldout_fraction) for t in train_texts)
    assert not set(held) & set(train_texts)


def test_bursty_icl_probes_are_correct_by_construction():
    data, dom = domain_of("icl_vs_iwl")
    label = dict(zip(dom.classes, dom.labels))
    items = data.probe_items(50)
    assert {it.family for it in items} == {"icl/icl_novel", "icl/iwl", "icl/icl_vs_iwl"}
    for it in items:
        context, query = parse_icl(it.prompt)
        shown = [v for _, v in context]
        in_context = {v for k, v in context if k == query}
        assert len(context) == dom.opt["context_pairs"] and it.correct != it.incorrect
        # copying a context label cannot pass: both answers occur, equally often
        assert shown.count(it.correct) == shown.count(it.incorrect) == len(context) // 2
        if it.family == "icl/icl_novel":  # novel classes, labels only in the context
            assert {k for k, _ in context} <= set(dom.novel) and in_context == {it.correct}
        elif it.family == "icl/iwl":  # the query is absent from the context: its memorized label
            assert not in_context and it.correct == label[query]
            assert all(label[k] == v for k, v in context)
        else:  # the context's label for the query against its memorized label
            assert in_context == {it.correct} and it.incorrect == label[query]


def parse_arith(text: str) -> list[tuple[int, int, int]]:
    out = []
    for line in text.split("\n"):
        lhs, answer = line.split("= ")
        a, b = (SYMBOLS.index(x) for x in lhs.split("+"))
        out.append((a, b, SYMBOLS.index(answer)))
    return out


def mode_of(lines: list[tuple[int, int, int]], p: int) -> set[str]:
    """Every mode an episode is consistent with."""
    answers, sums = [c for _, _, c in lines], [(a + b) % p for a, b, _ in lines]
    modes = set()
    if answers == sums:
        modes.add("compute")
        if len(set(answers)) == 1:
            modes.add("repeat")
        if all((y - x) % p == 1 for x, y in zip(answers, answers[1:])):
            modes.add("successive")
    if answers == [p - 1 - s for s in sums]:
        modes.add("flipped")
    return modes


def test_pattern_arithmetic_episodes_follow_their_mode():
    data, dom = domain_of("pattern_vs_compute")
    counts = {"compute": 0, "repeat": 0, "successive": 0, "flipped": 0}
    train_texts = texts(data, dom, TRAIN, 400)
    for text in train_texts:
        modes = mode_of(parse_arith(text), dom.p)
        assert modes, text
        for m in modes:
            counts[m] += 1
    expected = {m: float(dom.opt[m]) for m in PatternArithmetic.MODES}
    for m, w in expected.items():
        assert abs(counts[m] / 400 - w) < 0.08, counts
    held = texts(data, dom, HELDOUT, 100)
    assert all(is_heldout(t, dom.heldout_fraction) for t in held)
    assert not set(held) & set(train_texts)


def test_pattern_arithmetic_probes_set_pattern_against_computation():
    data, dom = domain_of("pattern_vs_compute")
    p, shots = dom.p, dom.opt["probe_shots"]
    items = data.probe_items(50)
    assert {it.family for it in items} == {"arith/repeat", "arith/successive", "arith/flipped"}
    for it in items:
        *demos, query = it.prompt.split("\n")
        lines = parse_arith("\n".join(demos))
        a, b = (SYMBOLS.index(x) for x in query.rstrip("=").split("+"))
        correct, wrong = SYMBOLS.index(it.correct), SYMBOLS.index(it.incorrect)
        mode = it.family.removeprefix("arith/")
        assert len(lines) == shots and mode in mode_of(lines, p)
        assert correct == (a + b) % p and wrong != correct
        pattern = {"repeat": lines[-1][2], "successive": (lines[-1][2] + 1) % p,
                   "flipped": p - 1 - correct}[mode]
        assert wrong == pattern


@pytest.mark.parametrize("kind,options,message", [
    ("modular_symbols", {"modulus": 97}, "modulus must be in"),
    ("bursty_icl", {"num_classes": 700}, "num_classes \\+ novel_classes"),
    ("bursty_icl", {"num_labels": 11}, "num_labels"),
    ("bursty_icl", {"num_classes": 12}, "too few classes"),
    ("bursty_icl", {"burst": 5}, "burst"),
    ("pattern_arithmetic", {"repeat": 0.6, "flipped": 0.6}, "mode probabilities"),
    ("pattern_arithmetic", {"shots": 0}, "shots"),
])
def test_bad_options_are_rejected(tiny_config, kind, options, message):
    tiny_config.data.domains = {"w": {"kind": kind, **options}}
    with pytest.raises(DataError, match=message):
        build_data(tiny_config)
