"""Domain sources: each turns (seed, split, index) into one training row of token ids.

Built-in synthetic domains render problems as text lines `"{prompt} {answer}"` joined by "\\n",
the same shape the probe hook scores, so K-shot probes are in-distribution. Each differs in what
generalizing means:
  - modular_arithmetic: compute (a + b) mod p for pairs never seen in training;
  - kv_lookup: retrieve the value bound to a key in the context (an induction-style skill);
  - grammar: subject-verb agreement with the head noun across an attractor noun.
A problem belongs to the held-out split iff a hash of its text says so (seed independent), so
held-out problems can never appear in a training row. Text files are split by document.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from genjax import paths
from genjax.data.tokenizers import Tokenizer

TRAIN, HELDOUT = 0, 1
_SPLIT_SALT = {TRAIN: 11, HELDOUT: 29}


class DataError(ValueError):
    """Bad data config or malformed data file."""


def is_heldout(text: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return h / 2.0**64 < fraction


def require_both_splits(domain: SyntheticDomain, texts, table: str) -> None:
    """A finite problem table must hold train and held-out problems, or sampling never ends."""
    seen = set()
    for text in texts:
        seen.add(is_heldout(text, domain.heldout_fraction))
        if len(seen) == 2:
            return
    missing = "held-out" if True not in seen else "training"
    raise DataError(f"domain '{domain.name}' ({domain.kind}): {table} has no {missing} problem "
                    f"at data.heldout_fraction={domain.heldout_fraction}; use a larger modulus "
                    f"or another data.heldout_fraction")


@dataclasses.dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer}"


@dataclasses.dataclass(frozen=True)
class ProbeItem:
    """A teacher-forced contrast: is `correct` or `incorrect` the likelier continuation?

    Each answer is scored followed by `terminator` (text; with `terminator_eos` the
    tokenizer's EOS token), what ends an answer in training text, so that when one answer is a
    prefix of the other ("jump" / "jumps") the shorter one must also predict its end.
    `group`: for replicates of one item (several demo seeds) the item's index, else -1."""

    family: str
    prompt: str
    correct: str
    incorrect: str
    terminator: str = ""
    terminator_eos: bool = False
    group: int = -1


# --------------------------------------------------------------------------- synthetic tasks


class SyntheticDomain:
    """Base: subclasses define `sample(rng) -> Problem` and probe families."""

    kind: str = ""
    options: dict = {}
    joiner = "\n"
    # what follows an answer in this domain's training text, scored after probe answers
    probe_terminator = "\n"

    def __init__(self, name: str, domain_id: int, tokenizer: Tokenizer, seq_len: int,
                 heldout_fraction: float, seed: int, **options):
        unknown = set(options) - set(self.options)
        if unknown:
            raise DataError(f"domain '{name}' ({self.kind}): unknown option(s) {sorted(unknown)}; "
                            f"known: {sorted(self.options)}")
        self.opt = {**self.options, **options}
        self.name, self.domain_id, self.tokenizer = name, domain_id, tokenizer
        self.seq_len, self.heldout_fraction, self.seed = seq_len, heldout_fraction, seed

    # subclasses -------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Problem:
        raise NotImplementedError

    def probe_families(self) -> dict[str, Callable[[np.random.Generator, int], ProbeItem]]:
        return {}

    # shared -----------------------------------------------------------------------------
    def sample_split(self, rng: np.random.Generator, split: int) -> Problem:
        while True:
            p = self.sample(rng)
            if is_heldout(p.text, self.heldout_fraction) == (split == HELDOUT):
                return p

    def rng(self, split: int, index: int, purpose: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.domain_id, _SPLIT_SALT[split], purpose,
                                      int(index)])

    def row(self, index: int, split: int) -> tuple[np.ndarray, np.ndarray]:
        """(`seq_len + 1` token ids: whole problems joined by the joiner, cut at the end;
        `seq_len` target weights: 1 on every target, or only on answer tokens when the
        domain's `loss_on` option is "answer")."""
        rng, ids, weights = self.rng(split, index), [], []
        answer_only = self.opt.get("loss_on", "all") == "answer"
        while len(ids) < self.seq_len + 1:
            p = self.sample_split(rng, split)
            head = self.tokenizer.encode(p.prompt + " ")
            full = self.tokenizer.encode(p.text + self.joiner)
            tail = self.tokenizer.encode(self.joiner)
            ids += full
            n_answer = len(full) - len(head) - len(tail)
            weights += ([0.0] * len(head) + [1.0] * n_answer + [0.0] * len(tail)
                        if answer_only else [1.0] * len(full))
        tokens = np.asarray(ids[: self.seq_len + 1], np.int32)
        return tokens, np.asarray(weights[1 : self.seq_len + 1], np.float32)

    def probe_items(self, family: str, n: int, seed: int) -> list[ProbeItem]:
        """n items of one of this domain's families, named `DOMAIN/FAMILY`."""
        make = self.probe_families()[family]
        rng = np.random.default_rng([seed, self.domain_id, 7, zlib.crc32(family.encode())])
        return [dataclasses.replace(make(rng, self.opt["probe_shots"]),
                                    family=f"{self.name}/{family}",
                                    terminator=self.probe_terminator)
                for _ in range(n)]

    def demos(self, problems: list[Problem]) -> str:
        return "".join(p.text + self.joiner for p in problems)


class ModularArithmetic(SyntheticDomain):
    """`a+b= c` with c = (a + b) mod p; held-out pairs are never trained on."""

    kind = "modular_arithmetic"
    options = {"modulus": 97, "probe_shots": 4, "loss_on": "all"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_table()

    def _check_table(self) -> None:
        """Sampling and the probe families loop until they find a held-out problem whose answer
        differs from a given one and a training problem with any given answer: the table must
        hold two held-out answers and every answer in training, or they never return."""
        p, f = self.opt["modulus"], self.heldout_fraction
        train, heldout = set(), set()
        for a in range(p):
            for b in range(p):
                prob = self.problem(a, b)
                (heldout if is_heldout(prob.text, f) else train).add(prob.answer)
            if len(train) == p and len(heldout) >= 2:
                return
        raise DataError(f"domain '{self.name}' ({self.kind}): modulus {p} is too small at "
                        f"data.heldout_fraction={f}: held-out problems cover {len(heldout)} "
                        f"answer(s) (2 needed), training problems {len(train)} of {p} (all "
                        f"needed); use a larger modulus or another data.heldout_fraction")

    def problem(self, a: int, b: int) -> Problem:
        return Problem(f"{a}+{b}=", str((a + b) % self.opt["modulus"]))

    def sample(self, rng):
        p = self.opt["modulus"]
        return self.problem(int(rng.integers(p)), int(rng.integers(p)))

    def with_answer(self, rng, c: int, split: int) -> Problem:
        """A problem of `split` whose answer is c."""
        p = self.opt["modulus"]
        while True:
            a = int(rng.integers(p))
            prob = self.problem(a, (c - a) % p)
            if is_heldout(prob.text, self.heldout_fraction) == (split == HELDOUT):
                return prob

    def probe_families(self):
        p = self.opt["modulus"]

        def repeat(rng, shots):  # every demo has answer c0; the test's true answer differs
            c0 = int(rng.integers(p))
            demos = [self.with_answer(rng, c0, TRAIN) for _ in range(shots)]
            while True:
                test = self.sample_split(rng, HELDOUT)
                if int(test.answer) != c0:
                    break
            return ProbeItem("repeat", self.demos(demos) + test.prompt, test.answer, str(c0))

        def successor(rng, shots):  # demo answers c0, c0+1, ...; pattern says c0+shots
            c0 = int(rng.integers(p))
            demos = [self.with_answer(rng, (c0 + i) % p, TRAIN) for i in range(shots)]
            pattern = (c0 + shots) % p
            while True:
                test = self.sample_split(rng, HELDOUT)
                if int(test.answer) != pattern:
                    break
            return ProbeItem("successor", self.demos(demos) + test.prompt, test.answer,
                             str(pattern))

        return {"repeat": repeat, "successor": successor}


class KVLookup(SyntheticDomain):
    """`ab:3,cd:7,ef:1 cd? 7`: return the value bound to the queried key in the context."""

    kind = "kv_lookup"
    options = {"num_pairs": 4, "key_len": 2, "alphabet": "abcdefghijklmnop", "probe_shots": 0,
               "loss_on": "all"}

    def _context(self, rng):
        alphabet, n = self.opt["alphabet"], self.opt["num_pairs"]
        keys: list[str] = []
        while len(keys) < n:
            k = "".join(rng.choice(list(alphabet), self.opt["key_len"]))
            if k not in keys:
                keys.append(k)
        values = [str(v) for v in rng.integers(10, size=n)]
        return keys, values

    def sample(self, rng):
        keys, values = self._context(rng)
        q = int(rng.integers(len(keys)))
        ctx = ",".join(f"{k}:{v}" for k, v in zip(keys, values))
        return Problem(f"{ctx} {keys[q]}?", values[q])

    def probe_families(self):
        def context(rng, shots):  # the bound value against another value from the context
            while True:
                prob = self.sample_split(rng, HELDOUT)
                ctx = prob.prompt.split(" ")[0]
                others = sorted({kv.split(":")[1] for kv in ctx.split(",")} - {prob.answer})
                if others:
                    return ProbeItem("context", prob.prompt, prob.answer,
                                     others[int(rng.integers(len(others)))])

        return {"context": context}


class Grammar(SyntheticDomain):
    """A small PCFG: `the dog near the cats runs`; the verb agrees with the head noun."""

    kind = "grammar"
    options = {"attractor_prob": 0.5, "probe_shots": 0, "loss_on": "all"}
    NOUNS = ("dog", "cat", "bird", "child", "farmer", "robot", "singer", "teacher")
    PLURAL = {"child": "children"}
    ADJS = ("small", "old", "happy", "red", "quiet")
    PREPS = ("near", "behind", "with", "beside")
    VERBS = ("run", "sleep", "sing", "jump", "wait", "smile")

    def _np(self, rng, plural: bool) -> str:
        noun = self.NOUNS[int(rng.integers(len(self.NOUNS)))]
        if plural:
            noun = self.PLURAL.get(noun, noun + "s")
        adj = self.ADJS[int(rng.integers(len(self.ADJS)))] + " " if rng.random() < 0.5 else ""
        return f"the {adj}{noun}"

    def _subject(self, rng, plural: bool, attractor: bool) -> str:
        subject = self._np(rng, plural)
        if attractor:
            prep = self.PREPS[int(rng.integers(len(self.PREPS)))]
            subject += f" {prep} {self._np(rng, not plural)}"
        return subject

    @staticmethod
    def _verb(verb: str, plural: bool) -> str:
        return verb if plural else verb + "s"

    def sample(self, rng):
        plural = bool(rng.random() < 0.5)
        attractor = bool(rng.random() < self.opt["attractor_prob"])
        verb = self.VERBS[int(rng.integers(len(self.VERBS)))]
        return Problem(self._subject(rng, plural, attractor), self._verb(verb, plural))

    def probe_families(self):
        def agreement(rng, shots):  # agree with the head noun, not with the nearer attractor
            while True:
                plural = bool(rng.random() < 0.5)
                verb = self.VERBS[int(rng.integers(len(self.VERBS)))]
                prob = Problem(self._subject(rng, plural, True), self._verb(verb, plural))
                if is_heldout(prob.text, self.heldout_fraction):
                    return ProbeItem("agreement", prob.prompt, prob.answer,
                                     self._verb(verb, not plural))

        return {"agreement": agreement}


# ------------------------------------------------------------------------------ text files


class TextDomain:
    """Documents from a text file (one per line) or JSONL (a text field), split by document."""

    kind = "text"
    options = {"path": "", "text_field": "text"}

    def __init__(self, name: str, domain_id: int, tokenizer: Tokenizer, seq_len: int,
                 heldout_fraction: float, seed: int, path: str = "", text_field: str = "text"):
        self.name, self.domain_id, self.seq_len, self.seed = name, domain_id, seq_len, seed
        self.tokenizer = tokenizer
        docs = list(documents(path, text_field))
        if not docs:
            raise DataError(f"data file is empty: {path}")
        streams: dict[int, list[int]] = {TRAIN: [], HELDOUT: []}
        self.documents, self.heldout_documents, self.moved_to_heldout = len(docs), 0, False
        for doc in docs:
            split = HELDOUT if is_heldout(doc, heldout_fraction) else TRAIN
            streams[split] += tokenizer.encode(doc) + [tokenizer.eos_id]
            self.heldout_documents += split == HELDOUT
        if not streams[HELDOUT] and streams[TRAIN] and len(docs) > 1:  # tiny files: keep one
            first = tokenizer.encode(docs[0]) + [tokenizer.eos_id]
            streams = {HELDOUT: first, TRAIN: streams[TRAIN][len(first):]}
            self.heldout_documents, self.moved_to_heldout = 1, True
        if not streams[TRAIN]:
            raise DataError(f"{path}: no training documents (file has {len(docs)} documents)")
        self.streams = {k: np.asarray(v, np.int32) for k, v in streams.items()}

    @property
    def train_tokens(self) -> int:
        return len(self.streams[TRAIN])

    def num_rows(self, split: int) -> int:
        return max(1, len(self.streams[split]) // (self.seq_len + 1))

    def row(self, index: int, split: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, target weights: 0 on padding)."""
        stream, n = self.streams[split], self.seq_len + 1
        if len(stream) == 0:
            raise DataError(f"domain '{self.name}' has no held-out documents")
        index = int(index) % self.num_rows(split)
        out = stream[index * n : (index + 1) * n]
        tokens = np.pad(out, (0, n - len(out)), constant_values=self.tokenizer.pad_id)
        return tokens, (np.arange(1, n) < len(out)).astype(np.float32)

    def probe_families(self):
        return {}


def documents(path: str | paths.Path, text_field: str = "text") -> Iterator[str]:
    """The documents of one file (local or gs://), in order: a line of a text file, the
    `text_field` of a .jsonl row or of a .parquet row; empty ones are skipped."""
    path = paths.as_path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install -e "
                            "'.[parquet]')") from None
        with path.open("rb") as f:
            table = pq.ParquetFile(f)
            if text_field not in table.schema_arrow.names:
                raise DataError(f"{path}: no column '{text_field}' (columns: "
                                f"{', '.join(table.schema_arrow.names)})")
            for batch in table.iter_batches(columns=[text_field], batch_size=1024):
                yield from (t for t in batch.column(0).to_pylist() if t)
        return
    with path.open("r") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.suffix != ".jsonl":
                yield line.rstrip("\n")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise DataError(f"{path}:{lineno}: row has no string field '{text_field}'")
            if row[text_field]:
                yield row[text_field]


def expand_files(patterns: str | Sequence[str], what: str = "data file",
                 where: str = "data.files") -> list[paths.Path]:
    """Paths or globs, local or gs:// (a comma-separated string, or a list) -> the existing
    files they name, in order, each once; DataError naming the first that is missing."""
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    out: list[paths.Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            first = min(i for i, c in enumerate(pattern) if c in "*?[")
            cut = pattern.rfind("/", 0, first)
            root, rest = (pattern[:cut], pattern[cut + 1:]) if cut >= 0 else (".", pattern)
            matches = sorted(paths.as_path(root).glob(rest), key=str)
        else:
            matches = [paths.as_path(pattern)]
        if not matches:
            raise DataError(f"{where} pattern matches no file: {pattern}")
        for m in matches:
            try:
                exists = m.is_file()
            except Exception as e:  # noqa: BLE001 - a bucket nobody can read, say
                raise DataError(f"cannot read {m}: {type(e).__name__}: {e}") from None
            if not exists:
                raise DataError(f"{what} not found: {m}")
            if str(m) not in {str(p) for p in out}:
                out.append(m)
    return out


from genjax.data import shards, world  # noqa: E402  (they build on the names above)

KINDS = {cls.kind: cls for cls in (ModularArithmetic, KVLookup, Grammar, TextDomain,
                                   shards.PreparedDomain, *world.DOMAINS)}
