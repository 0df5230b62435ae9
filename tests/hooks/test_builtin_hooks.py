"""Every built-in hook equals an independent recomputation (separate forward passes in numpy),
does not change training, honours `every` without recompiling, and is mesh-independent."""

import jax
import numpy as np
import pytest
from jax.extend.core import Var

from genjax.data import TRAIN
from genjax.hooks.probes import ProbeHook
from genjax.stream.sinks import MemorySink
from genjax.train.trainer import Trainer

TOL = 1e-5


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def forward(trainer, params, tokens):
    """A plain jitted forward of the model (no hook code involved)."""
    return np.asarray(jax.jit(trainer.program.apply_fn)(params, np.asarray(tokens)), np.float64)


def per_domain_reference(trainer, params, rows, num_domains):
    """Token-weighted loss and accuracy per domain, one domain's rows at a time."""
    loss, acc = np.full(num_domains, np.nan), np.full(num_domains, np.nan)
    for d in range(num_domains):
        sel = rows["domain"] == d
        if not sel.any():
            continue
        logp = log_softmax(forward(trainer, params, rows["inputs"][sel]))
        tgt, mask = rows["targets"][sel], rows["loss_mask"][sel]
        nll = -np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
        hit = logp.argmax(-1) == tgt
        loss[d] = (nll * mask).sum() / mask.sum()
        acc[d] = (hit * mask).sum() / mask.sum()
    return loss, acc


def probe_reference(trainer, params, items, tokenizer):
    """Scores each answer in its own plain causal pass over `prompt + " " + answer` and the
    item's terminator (right-padded to one length: causal attention makes the padding
    invisible)."""
    texts = [it.prompt + " " + a + it.terminator for it in items
             for a in (it.correct, it.incorrect)]
    width = max(len(tokenizer.encode(t)) for t in texts)
    out = []
    for it in items:
        ctx = tokenizer.encode(it.prompt + " ")
        scores = []
        for answer in (it.correct, it.incorrect):
            ids = tokenizer.encode(it.prompt + " " + answer + it.terminator)
            padded = np.full((1, width), tokenizer.pad_id, np.int32)
            padded[0, : len(ids) - 1] = ids[:-1]
            logp = log_softmax(forward(trainer, params, padded))[0]
            tok = np.asarray(ids[len(ctx):])
            token_logp = logp[np.arange(len(ctx) - 1, len(ids) - 1), tok]
            scores.append((token_logp.sum(), np.exp(token_logp).mean()))
        out.append(scores)
    return out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Trains 3 steps, then runs step 3 keeping its pre-update params and metrics."""
    import tiny

    from genjax.config import load
    from tests.conftest import CONFIGS

    config = tiny.with_all_hooks(load(CONFIGS / "tiny.py"))
    trainer = Trainer(config, tmp_path_factory.mktemp("hooks"), devices=jax.devices()[:1])
    program, state = trainer.program, trainer.program.init_state()
    batches = trainer.data.train_batches(config.train.batch_size)
    for _ in range(3):
        state, _ = program.step_fn(state, program.global_batch(next(batches)), trainer.hook_data)
    params = jax.tree.map(np.array, jax.device_get(state.params))
    batch = next(batches)
    _, metrics = program.step_fn(state, program.global_batch(batch), trainer.hook_data)
    return trainer, params, batch, jax.device_get(metrics)


def test_train_domain_and_heldout_hooks(evaluated):
    trainer, params, batch, m = evaluated
    n = len(trainer.data.names)
    train_loss, train_acc = per_domain_reference(trainer, params, batch, n)
    np.testing.assert_allclose(m["train_domains/loss"], train_loss, atol=TOL)
    np.testing.assert_allclose(m["train_domains/accuracy"], train_acc, atol=TOL)
    counts = [batch["loss_mask"][batch["domain"] == d].sum() for d in range(n)]
    np.testing.assert_array_equal(m["train_domains/tokens"], counts)
    heldout = next(h for h in trainer.program.hooks if h.name == "heldout").rows
    held_loss, held_acc = per_domain_reference(trainer, params, heldout, n)
    np.testing.assert_allclose(m["heldout/loss"], held_loss, atol=TOL)
    np.testing.assert_allclose(m["heldout/accuracy"], held_acc, atol=TOL)
    np.testing.assert_allclose(m["gap/loss"], held_loss - train_loss, atol=TOL)
    total = (batch["loss_mask"]).sum()
    assert np.isclose(m["train/loss"], np.nansum(train_loss * counts) / total, atol=TOL)


def test_memorization_hook(evaluated):
    trainer, params, _, m = evaluated
    hook = next(h for h in trainer.program.hooks if h.name == "memorization")
    n = len(trainer.data.names)
    seen, _ = per_domain_reference(trainer, params, hook.seen, n)
    fresh, _ = per_domain_reference(trainer, params, hook.fresh, n)
    np.testing.assert_allclose(m["memorization/seen_loss"], seen, atol=TOL)
    np.testing.assert_allclose(m["memorization/fresh_loss"], fresh, atol=TOL)
    np.testing.assert_allclose(m["memorization/gap"], fresh - seen, atol=TOL)
    # the seen rows really are training rows the model was given at step <= seen_by_step
    stream = trainer.data.mixture(TRAIN)
    b = trainer.config.train.batch_size
    trained = {stream[i]["inputs"].tobytes() for i in range((hook.seen_by_step + 1) * b)}
    assert all(r.tobytes() in trained for r in hook.seen["inputs"])


def test_probe_hook_matches_separate_passes(evaluated):
    trainer, params, _, m = evaluated
    hook = next(h for h in trainer.program.hooks if isinstance(h, ProbeHook))
    ref = probe_reference(trainer, params, hook.items, trainer.data.tokenizer)
    logp_margin = np.array([c[0] - i[0] for c, i in ref])
    prob_margin = np.array([c[1] - i[1] for c, i in ref])
    np.testing.assert_allclose(m["probes/item_logp_margin"], logp_margin, atol=1e-4)
    np.testing.assert_allclose(m["probes/item_margin"], prob_margin, atol=TOL)
    fams = np.array([it.family for it in hook.items])
    for f, family in enumerate(hook.families):
        sel = fams == family
        np.testing.assert_allclose(m["probes/soft_margin"][f], prob_margin[sel].mean(), atol=TOL)
        np.testing.assert_allclose(m["probes/logp_margin"][f], logp_margin[sel].mean(),
                                   atol=1e-4)
        wins = np.array([c[1] > i[1] for c, i in ref])[sel]
        assert m["probes/accuracy"][f] == pytest.approx(wins.mean())


def test_hooks_do_not_change_training(tiny_config, tiny_hooks_config, tmp_path):
    import copy

    plain = copy.deepcopy(tiny_config)
    plain.train.steps = tiny_hooks_config.train.steps = 4
    runs = []
    for name, cfg in (("off", plain), ("on", tiny_hooks_config)):
        result = Trainer(cfg, tmp_path / name, devices=jax.devices()[:1]).run()
        runs.append(result)
    off, on = runs
    assert [off.losses[s] for s in range(4)] == [on.losses[s] for s in range(4)]
    for a, b in zip(jax.tree.leaves(jax.device_get(off.state.params)),
                    jax.tree.leaves(jax.device_get(on.state.params)), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_every_n_without_recompiling(tiny_hooks_config, tmp_path):
    c = tiny_hooks_config
    c.train.steps = 7
    c.hooks.heldout.every = 3
    c.hooks.probes.every = 2
    sink = MemorySink()
    trainer = Trainer(c, tmp_path, devices=jax.devices()[:1], sinks=[sink])
    trainer.run()
    held = sink.series("heldout/loss")
    probes = sink.series("probes/accuracy")
    gap, train = sink.series("gap/loss"), sink.series("train_domains/loss")
    for step in range(7):
        assert np.isfinite(held[step]).all() == (step % 3 == 0), step
        assert np.isfinite(probes[step]).all() == (step % 2 == 0), step
        # the gap is taken outside the gate: on the gated steps, from that step's train batch
        expected = held[step] - train[step] if step % 3 == 0 else np.full_like(held[step], np.nan)
        np.testing.assert_allclose(gap[step], expected, atol=TOL)
    assert np.isfinite(gap[::3]).any()
    assert np.isfinite(train).any(axis=1).all()
    assert trainer.program.step_fn._cache_size() == 1  # one compilation for all 7 steps


def _gate_operands_from_batch(program) -> list[int]:
    """How many operands of each `lax.cond` in the traced step derive from the train batch (a
    value counts as derived if any input of any equation that made it was)."""
    state, batch, hook_data = program.abstract_args()
    closed = jax.make_jaxpr(program.step_fn)(state, batch, hook_data)
    inner = closed.jaxpr.eqns[0].params["jaxpr"].jaxpr  # the jitted step
    n_state = len(jax.tree.leaves(state))
    derived = set(inner.invars[n_state:n_state + len(jax.tree.leaves(batch))])
    counts = []
    for eqn in inner.eqns:
        hit = [v for v in eqn.invars if isinstance(v, Var) and v in derived]
        if eqn.primitive.name == "cond":
            counts.append(len(hit) - (eqn.invars[0] in derived))  # the predicate is the step's
        if hit:
            derived.update(eqn.outvars)
    return counts


@pytest.mark.parametrize("fuse", ["off", "on"])
def test_eval_gates_do_not_wait_on_the_train_step(tiny_hooks_config, tmp_path, fuse):
    """The every-N eval passes (held-out, memorization, probes; fused or not) are gated on the
    step's parameters and their own rows only: the held-out gap reads the train batch after
    the gate (`Hook.finish`). A gate that waited on the train batch's per-token losses cost
    ~1 ms per skipped step on the quickstart (2 CPU cores)."""
    c = tiny_hooks_config
    for name in ("heldout", "probes", "memorization"):
        c.hooks[name].every = 3
    c.hooks.train_domains.enabled = False
    c.hooks.fuse_passes = fuse
    trainer = Trainer(c, tmp_path, devices=jax.devices()[:1])
    units = trainer.program.monitor.units
    assert any("+" in u.name for u in units) == (fuse == "on")  # a fused pass is gated too
    counts = _gate_operands_from_batch(trainer.program)
    assert len(counts) == sum(u.every > 1 for u in units) >= 2
    assert counts == [0] * len(counts)


def test_probe_hook_with_splash_kernels_matches(evaluated):
    """The packed scoring through splash kernels (Pallas interpreter on CPU, rows of 128
    tokens) equals the XLA-attention hook, which equals separate plain passes."""
    from genjax.model import abstract_model, make_apply, make_attention

    trainer, params, _, m = evaluated
    xla_hook = next(h for h in trainer.program.hooks if isinstance(h, ProbeHook))
    hook = ProbeHook(xla_hook.items, trainer.data.tokenizer, length_multiple=128)
    assert hook.packed["inputs"].shape[1] % 128 == 0
    splash = make_attention("splash", interpret=True)
    graphdef, _ = abstract_model(trainer.program.model_cfg, attend=splash)
    out = jax.jit(lambda p, d: hook.compute(p, make_apply(graphdef), d, None))(
        params, hook.data())
    for name in ("probes/item_margin", "probes/item_logp_margin", "probes/accuracy"):
        np.testing.assert_allclose(np.asarray(out[name]), m[name], rtol=0, atol=TOL,
                                   err_msg=name)
