"""A generalization world: small synthetic tasks with known transitions, for testing monitors.

Each kind is a training domain with a matching held-out split and contrastive probe families:
  - modular_symbols: (a + b) mod p, one symbol per residue (Power et al. 2022; Nanda et al.
    2023). Held-out pairs are never trained on, so held-out accuracy rises only when the model
    groks the group structure.
  - bursty_icl: classify a class token by its label, in sequences whose context may hold the
    query's class with its label (Chan et al. 2022). Probes separate in-context learning (use
    the context's label) from in-weights learning (use the memorized label).
  - pattern_arithmetic: lists of (a + b) mod p problems whose answers sometimes follow a
    shallow pattern (one repeated answer, answers counting up, labels flipped); probes set
    each pattern against the correct computation (the mode-hopping families of Wen et al.).
Every answer is a single byte-level token, so answer-token accuracy is exact-match accuracy,
and no probe answer is a prefix of the other: probe answers are scored without a terminator
(in these configs a problem ends its row, so nothing after an answer is ever trained on).
"""

from __future__ import annotations

import string
from collections.abc import Callable

import numpy as np

from genjax.data.sources import (
    HELDOUT,
    TRAIN,
    DataError,
    ProbeItem,
    Problem,
    SyntheticDomain,
    is_heldout,
    require_both_splits,
)

SYMBOLS = string.digits + string.ascii_uppercase + string.ascii_lowercase  # residue i -> char


def _symbol_modulus(name: str, kind: str, p: int) -> int:
    if not 2 <= p <= len(SYMBOLS):
        raise DataError(f"domain '{name}' ({kind}): modulus must be in [2, {len(SYMBOLS)}] "
                        f"(one symbol per residue), got {p}")
    return p


class ModularSymbols(SyntheticDomain):
    """`a+b= c` over Z_p, each residue one symbol (0-9, A-Z, a-z): one token per operand, so the
    model sees only the group table, as in the grokking papers (digits would add carries).

    The held-out split is a fixed set of unordered pairs {a, b} (a hash of the text of `a+b=`
    with a <= b), i.e. the `heldout_fraction` of the table never trained on. Splitting ordered
    pairs instead would let a model that learned commutativity answer ~(1 - fraction) of the
    held-out problems from their trained mirror images, long before it groks.
    """

    kind = "modular_symbols"
    options = {"modulus": 59, "loss_on": "answer"}
    probe_terminator = ""  # one-token answers (see the module docstring)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.p = _symbol_modulus(self.name, self.kind, self.opt["modulus"])
        require_both_splits(self, (self.problem(a, b).text for a in range(self.p)
                                   for b in range(a, self.p)),
                            f"modulus {self.p} ({self.p * (self.p + 1) // 2} unordered pairs)")

    def problem(self, a: int, b: int) -> Problem:
        return Problem(f"{SYMBOLS[a]}+{SYMBOLS[b]}=", SYMBOLS[(a + b) % self.p])

    def sample(self, rng: np.random.Generator) -> Problem:
        return self.problem(int(rng.integers(self.p)), int(rng.integers(self.p)))

    def split_of(self, a: int, b: int) -> int:
        return HELDOUT if is_heldout(self.problem(min(a, b), max(a, b)).text,
                                     self.heldout_fraction) else TRAIN

    def sample_split(self, rng: np.random.Generator, split: int) -> Problem:
        while True:
            a, b = int(rng.integers(self.p)), int(rng.integers(self.p))
            if self.split_of(a, b) == split:
                return self.problem(a, b)

    def pairs(self, split: int) -> list[tuple[int, int]]:
        """Every (a, b) of the split, in order (the whole table is p^2 problems)."""
        return [(a, b) for a in range(self.p) for b in range(self.p)
                if self.split_of(a, b) == split]


class EpisodeDomain(SyntheticDomain):
    """A problem that is an episode: lines `prompt answer` joined by `line_sep`, the last line
    the query. `loss_on="answers"` puts loss on every line's answer (the in-context demos' too),
    not only on the query's; "answer" and "all" mean what they mean for any domain."""

    line_sep = "\n"
    probe_terminator = ""  # one-token answers (see the module docstring)

    def answer_mask(self, text: str) -> list[float]:
        """1.0 on the tokens of every line's answer (the text after its last space)."""
        n = lambda s: len(self.tokenizer.encode(s))
        mask, start = [0.0] * n(text), 0
        for line in text.removesuffix(self.joiner).split(self.line_sep):
            a, b = start + line.rindex(" ") + 1, start + len(line)
            mask[n(text[:a]):n(text[:b])] = [1.0] * (n(text[:b]) - n(text[:a]))
            start += len(line) + len(self.line_sep)
        return mask

    def row(self, index: int, split: int) -> tuple[np.ndarray, np.ndarray]:
        if self.opt["loss_on"] != "answers":
            return super().row(index, split)
        rng, ids, weights = self.rng(split, index), [], []
        while len(ids) < self.seq_len + 1:
            text = self.sample_split(rng, split).text + self.joiner
            ids += self.tokenizer.encode(text)
            weights += self.answer_mask(text)
        return (np.asarray(ids[: self.seq_len + 1], np.int32),
                np.asarray(weights[1 : self.seq_len + 1], np.float32))


class BurstyICL(EpisodeDomain):
    """`KQ 3,BD 7,KQ 3,...,KQ 3`: name the label of the last class token (Chan et al. 2022).

    Classes are two-letter keys drawn from a Zipf law; each has a fixed label (a digit), so the
    label can be memorized (in-weights learning, IWL). With probability `bursty`, the context
    also holds `burst` items of the query's class (and `burst` of one other class), so the
    label can be copied from the context (in-context learning, ICL: an induction head). With
    probability `relabel`, a bursty episode permutes the labels of all its items and its answer
    (its own labeling, as in few-shot learning): only ICL solves it. Over a few hundred classes
    of two-token keys, memorizing is so easy for a transformer that without relabeled episodes
    IWL wins and ICL barely emerges (unlike Chan et al.'s images, whose exemplars vary).
    `novel_classes` keys never occur in training: they exist only in probes.

    An episode is `5 * context_pairs + 4` tokens: `train.seq_len = 5 * context_pairs + 3` makes
    one episode per row (the final newline cut).

    Probe families (correct vs incorrect continuation); each context holds two classes, half
    of the items each, and both candidate labels equally often (so that copying whatever label
    the context shows cannot pass):
      - icl_novel: two novel classes with arbitrary labels: the query's label in the context vs
        the other class's (only ICL solves it);
      - iwl: a trained class absent from the context, which shows its memorized label on
        another class: the memorized label vs the other class's (only IWL solves it);
      - icl_vs_iwl: a trained class shown with another label than its memorized one, which
        the other class carries: the context's label vs the memorized label (accuracy > 0.5:
        the context wins; < 0.5: the weights win).
    In iwl and icl_vs_iwl both answers are labels of classes drawn from the same Zipf law, so
    label frequency alone (a unigram model) scores 0.5 (labels of frequent classes would
    otherwise favour the memorized answer).
    """

    kind = "bursty_icl"
    line_sep = ","
    options = {"num_classes": 512, "novel_classes": 64, "num_labels": 10, "context_pairs": 8,
               "bursty": 0.9, "burst": 3, "relabel": 0.0, "zipf": 1.0, "loss_on": "answer",
               "probe_shots": 0}  # probes use context_pairs items; probe_shots is unused
    KEY_CHARS = string.ascii_uppercase

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.opt
        keys = [a + b for a in self.KEY_CHARS for b in self.KEY_CHARS]
        if o["num_classes"] + o["novel_classes"] > len(keys):
            raise DataError(f"domain '{self.name}' ({self.kind}): num_classes + novel_classes "
                            f"must be at most {len(keys)}")
        if not 2 <= o["num_labels"] <= 10:
            raise DataError(f"domain '{self.name}' ({self.kind}): num_labels must be in [2, 10]")
        if o["context_pairs"] < 2 * o["burst"] or o["burst"] < 1:
            raise DataError(f"domain '{self.name}' ({self.kind}): need 1 <= burst and "
                            f"2 * burst <= context_pairs")
        table = np.random.default_rng([self.seed, self.domain_id, 101])
        order = table.permutation(len(keys))
        self.classes = [keys[i] for i in order[: o["num_classes"]]]
        self.novel = [keys[i] for i in order[o["num_classes"]:][: o["novel_classes"]]]
        self.labels = [str(v) for v in table.integers(o["num_labels"], size=o["num_classes"])]
        if min(self.labels.count(str(v)) for v in range(o["num_labels"])) < 2:
            raise DataError(f"domain '{self.name}' ({self.kind}): too few classes: the probes "
                            f"need every label on at least 2 classes")
        ranks = np.arange(1, o["num_classes"] + 1, dtype=np.float64)
        self.class_cdf = np.cumsum(ranks ** -o["zipf"]) / np.sum(ranks ** -o["zipf"])

    def _draw(self, rng: np.random.Generator, n: int, exclude: tuple[int, ...] = ()) -> list[int]:
        """n class indices from the Zipf law, none of them in `exclude`."""
        out: list[int] = []
        while len(out) < n:
            i = min(int(np.searchsorted(self.class_cdf, rng.random())), len(self.classes) - 1)
            if i not in exclude:
                out.append(i)
        return out

    @staticmethod
    def _episode(items: list[tuple[str, str]], query: str, answer: str) -> Problem:
        return Problem(",".join(f"{k} {v}" for k, v in items) + f",{query}", answer)

    def _bursty_context(self, rng, q: int, q_label: str) -> list[tuple[str, str]]:
        """`burst` items of q (with `q_label`), `burst` of another class, the rest iid but not q."""
        n, burst = self.opt["context_pairs"], self.opt["burst"]
        other = self._draw(rng, 1, exclude=(q,))[0]
        ids = [other] * burst + self._draw(rng, n - 2 * burst, exclude=(q,))
        items = [(self.classes[q], q_label)] * burst + [(self.classes[i], self.labels[i])
                                                         for i in ids]
        return [items[i] for i in rng.permutation(n)]

    def sample(self, rng: np.random.Generator) -> Problem:
        q = self._draw(rng, 1)[0]
        if rng.random() >= self.opt["bursty"]:
            items = [(self.classes[i], self.labels[i])
                     for i in self._draw(rng, self.opt["context_pairs"])]
            return self._episode(items, self.classes[q], self.labels[q])
        items, answer = self._bursty_context(rng, q, self.labels[q]), self.labels[q]
        if rng.random() < self.opt["relabel"]:  # this episode's own labels: only ICL solves it
            perm = rng.permutation(self.opt["num_labels"])
            items = [(k, str(perm[int(v)])) for k, v in items]
            answer = str(perm[int(answer)])
        return self._episode(items, self.classes[q], answer)

    def _two_way(self, rng, first: tuple[str, str], second: tuple[str, str]) -> list:
        """A context of two classes, half of the items each, shuffled (a 2-way few-shot task):
        both candidate labels occur equally often, so copying any context label does not help."""
        n = self.opt["context_pairs"]
        items = [first] * (n // 2) + [second] * (n - n // 2)
        return [items[i] for i in rng.permutation(n)]

    def _with_label(self, rng, label: str, same: bool, exclude: int) -> int:
        """A trained class other than `exclude` whose label is (or, same=False, is not) `label`."""
        ids = [i for i, lab in enumerate(self.labels) if (lab == label) == same and i != exclude]
        return ids[int(rng.integers(len(ids)))]

    def probe_families(self) -> dict[str, Callable[[np.random.Generator, int], ProbeItem]]:
        num_labels = self.opt["num_labels"]

        def icl_novel(rng, shots):
            u, v = (self.novel[i] for i in rng.choice(len(self.novel), 2, replace=False))
            lu, lv = (str(x) for x in rng.choice(num_labels, 2, replace=False))
            prompt = self._episode(self._two_way(rng, (u, lu), (v, lv)), u, lu).prompt
            return ProbeItem("icl_novel", prompt, lu, lv)

        def two_labels(rng) -> tuple[int, int]:
            """Two classes drawn independently from the Zipf law, until their labels differ:
            either label is as likely to be the correct answer as the other, so a model that
            knows only how often each label occurs sits at chance."""
            while True:
                q, b = self._draw(rng, 2)
                if self.labels[q] != self.labels[b]:
                    return q, b

        def iwl(rng, shots):
            q, b = two_labels(rng)
            a = self._with_label(rng, self.labels[q], True, q)
            context = self._two_way(rng, (self.classes[a], self.labels[a]),
                                    (self.classes[b], self.labels[b]))
            prompt = self._episode(context, self.classes[q], self.labels[q]).prompt
            return ProbeItem("iwl", prompt, self.labels[q], self.labels[b])

        def icl_vs_iwl(rng, shots):
            q, other = two_labels(rng)
            swapped = self.labels[other]
            d = self._with_label(rng, self.labels[q], True, q)
            context = self._two_way(rng, (self.classes[q], swapped),
                                    (self.classes[d], self.labels[d]))
            prompt = self._episode(context, self.classes[q], swapped).prompt
            return ProbeItem("icl_vs_iwl", prompt, swapped, self.labels[q])

        return {"icl_novel": icl_novel, "iwl": iwl, "icl_vs_iwl": icl_vs_iwl}


class PatternArithmetic(EpisodeDomain):
    """Episodes of `shots` demos and a query, `a+b= c` over Z_p (one symbol per residue),
    whose answers follow one of four modes, drawn per episode:
      - compute: independent problems (only the computation predicts the answers);
      - repeat: every answer is the same c0 (each still correct: both strategies work);
      - successive: answers c0, c0+1, ... (each still correct: both strategies work);
      - flipped: every answer is mirrored, p-1-c (the context redefines the labels).
    Probes set each pattern against the computation: the same demos, but a query whose correct
    answer differs from the pattern's (correct = the computation, incorrect = the pattern).
    Held-out rows are episodes (hash of the text) never trained on; a probe episode never
    occurs in training, since there a query always follows its episode's mode.

    An episode is `7 * (shots + 1) - 1` tokens: `train.seq_len = 7 * shots + 5` makes one
    episode per row (the final newline cut).
    """

    kind = "pattern_arithmetic"
    options = {"modulus": 11, "shots": 4, "repeat": 0.2, "successive": 0.2, "flipped": 0.2,
               "probe_shots": 4, "loss_on": "answer"}
    MODES = ("repeat", "successive", "flipped")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.p = _symbol_modulus(self.name, self.kind, self.opt["modulus"])
        weights = [float(self.opt[m]) for m in self.MODES]
        if min(weights) < 0 or sum(weights) > 1:
            raise DataError(f"domain '{self.name}' ({self.kind}): mode probabilities "
                            f"{dict(zip(self.MODES, weights))} must be >= 0 and sum to <= 1")
        self.mode_p = np.asarray([1.0 - sum(weights), *weights])
        if min(self.opt["shots"], self.opt["probe_shots"]) < 1:
            raise DataError(f"domain '{self.name}' ({self.kind}): shots and probe_shots must be "
                            f"at least 1 (a pattern needs a demo)")

    def flip(self, c: int) -> int:
        return self.p - 1 - c

    def line(self, a: int, b: int, answer: int) -> Problem:
        return Problem(f"{SYMBOLS[a]}+{SYMBOLS[b]}=", SYMBOLS[answer])

    def with_sum(self, rng: np.random.Generator, c: int) -> tuple[int, int]:
        a = int(rng.integers(self.p))
        return a, (c - a) % self.p

    def episode(self, rng: np.random.Generator, mode: str, n: int) -> list[Problem]:
        """n lines in `mode`: each line's answer is correct except in the flipped mode."""
        c0 = int(rng.integers(self.p))
        lines = []
        for i in range(n):
            if mode == "repeat":
                a, b = self.with_sum(rng, c0)
            elif mode == "successive":
                a, b = self.with_sum(rng, (c0 + i) % self.p)
            else:
                a, b = int(rng.integers(self.p)), int(rng.integers(self.p))
            c = (a + b) % self.p
            lines.append(self.line(a, b, self.flip(c) if mode == "flipped" else c))
        return lines

    def sample(self, rng: np.random.Generator) -> Problem:
        mode = ("compute", *self.MODES)[int(rng.choice(4, p=self.mode_p))]
        lines = self.episode(rng, mode, self.opt["shots"] + 1)
        return Problem(self.demos(lines[:-1]) + lines[-1].prompt, lines[-1].answer)

    def probe_families(self) -> dict[str, Callable[[np.random.Generator, int], ProbeItem]]:
        def family(mode: str, pattern_answer: Callable[[list[int], int], int]):
            def make(rng, shots):
                demos = self.episode(rng, mode, shots)
                answers = [SYMBOLS.index(d.answer) for d in demos]
                while True:  # a query on which computation and pattern disagree
                    a, b = int(rng.integers(self.p)), int(rng.integers(self.p))
                    c = (a + b) % self.p
                    pattern = pattern_answer(answers, c)
                    if pattern != c:
                        break
                query = self.line(a, b, c)
                return ProbeItem(mode, self.demos(demos) + query.prompt,
                                 query.answer, SYMBOLS[pattern])
            return make

        return {
            "repeat": family("repeat", lambda ans, c: ans[-1]),
            "successive": family("successive", lambda ans, c: (ans[-1] + 1) % self.p),
            "flipped": family("flipped", lambda ans, c: self.flip(c)),
        }


DOMAINS = (ModularSymbols, BurstyICL, PatternArithmetic)
