"""The predictor hook: spectra against numpy, per-example gradients against a loop of single-row
gradients, 1 == 8 devices with padded rows, scanned == looped layers, probe rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genjax.batching import EvalBatching
from genjax.config import load
from genjax.data import build_data
from genjax.hooks.base import HookError
from genjax.hooks.predictors import PredictorHook
from genjax.hooks.probes import answer_tokens
from genjax.hooks.registry import build_hooks, predictor_hook, probe_items
from genjax.model import ModelConfig, token_stats, transformer
from genjax.train.trainer import TrainProgram
from tests.conftest import CONFIGS

ROWS = 6  # not a multiple of 4: with shards=4 the hook pads to 8 rows
# float32 hook vs float64 numpy on the tiny model (measured max abs errors in the comments).
SPECTRAL_TOL = 5e-6  # rankme / participation ratio (values 3-6): measured 3.4e-7
GRAD_TOL = 1e-5  # log trace (values 0-6), top eig / trace, mean |cos|: measured 1.4e-6
SHARDED_TOL = 1e-5  # 1 vs 8 devices, every predictor metric: measured 4.8e-7
SCAN_TOL = 5e-6  # scanned vs looped blocks, same params: measured 2.4e-7


def _setup(tiny_config, shards=4, micro_batch=4, source="heldout", scan=False):
    c = tiny_config
    c.hooks.predictors.update(enabled=True, examples=ROWS, source=source)
    c.model.scan_layers = scan
    data = build_data(c)
    hook = predictor_hook(c, data, EvalBatching(micro_batch=micro_batch, shards=shards))
    model = transformer(ModelConfig.from_config(c.model))
    return c, data, hook, model


@pytest.fixture(scope="module")
def looped():
    """(hook on 6 rows padded to 8 in micro-batches of 4, model, params, its metrics):
    compiled once for the numpy and single-row-gradient comparisons."""
    _, _, hook, model = _setup(load(CONFIGS / "tiny.py"))
    assert len(hook.data()["inputs"]) == 8  # padding is exercised
    params = _trained_params(model)
    return hook, model, params, _compute(hook, model, params)


def _compute(hook, model, params):
    data = jax.tree.map(jnp.asarray, hook.data())
    out = jax.jit(lambda p, d: hook.compute(p, model.apply, d, None))(params, data)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _trained_params(model, seed=0):
    """Init params moved off init a little (random, fixed) so no spectrum is degenerate."""
    params = model.init(seed)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.02 * jax.random.normal(k, x.shape, x.dtype)
                                     for x, k in zip(leaves, keys, strict=True)])


def _spectral_numpy(layers_LxNxTxD, mask_NxT):
    h = np.einsum("lntd,nt->lnd", layers_LxNxTxD, mask_NxT) / mask_NxT.sum(1)[None, :, None]
    s = np.clip(np.linalg.eigvalsh(np.einsum("lnd,lmd->lnm", h, h)), 0, None)
    p = s / s.sum(-1, keepdims=True)
    logp = np.log(np.where(p > 0, p, 1.0))
    return {"predictors/rankme": np.exp(-(p * logp).sum(-1)),
            "predictors/participation_ratio": s.sum(-1) ** 2 / (s**2).sum(-1)}


def _group(path) -> str:
    keys = [getattr(k, "key", getattr(k, "idx", k)) for k in path]
    return f"layer_{keys[1]}" if keys[0] == "blocks" else str(keys[0])


def test_spectral_measures_match_numpy(looped):
    """Hook (6 rows padded to 8, micro-batches of 4) vs float64 numpy on the activations from
    `layer_outputs` of the 6 real rows: rankme and participation ratio per block."""
    hook, model, params, got = looped
    layers = np.asarray(jax.jit(model.apply.layer_outputs)(params, hook.rows["inputs"]),
                        np.float64)
    want = _spectral_numpy(layers, hook.rows["loss_mask"].astype(np.float64))
    for name, value in want.items():
        assert got[name].shape == (2,)
        np.testing.assert_allclose(got[name], value, rtol=0, atol=SPECTRAL_TOL, err_msg=name)
    assert np.all(want["predictors/rankme"] > 1.5)  # not a degenerate spectrum
    # the hook's labels: one per block
    spec = {s.name: s for s in hook.schema()}
    assert spec["predictors/rankme"].labels["layer"] == ("layer_0", "layer_1")


def test_gradient_measures_match_single_row_loop(looped):
    """Per-example-gradient measures vs a Python loop of `jax.grad` on one row at a time (no
    vmap), grouped by parameter path here and combined in float64 numpy."""
    hook, model, params, got = looped
    rows = hook.rows

    @jax.jit
    def row_grad(p, inputs_1xT, targets_1xT, mask_1xT):
        def loss(p):
            loss_1xT, _ = token_stats(model.apply, p, inputs_1xT, targets_1xT)
            return jnp.sum(loss_1xT * mask_1xT) / jnp.sum(mask_1xT)
        return jax.grad(loss)(p)

    groups = list(hook.param_groups)
    per_group = {g: [] for g in groups}  # group -> N flat gradient vectors
    for i in range(ROWS):
        g = row_grad(params, rows["inputs"][i:i + 1], rows["targets"][i:i + 1],
                     rows["loss_mask"][i:i + 1])
        flat: dict[str, list] = {name: [] for name in groups}
        for path, leaf in jax.tree_util.tree_flatten_with_path(g)[0]:
            flat[_group(path)].append(np.asarray(leaf, np.float64).ravel())
        for name in groups:
            per_group[name].append(np.concatenate(flat[name]))
    want = {k: [] for k in ("predictors/log_fisher_trace", "predictors/top_eig_over_trace",
                            "predictors/mean_abs_cos")}
    for name in groups:
        g_NxP = np.stack(per_group[name])
        gram = g_NxP @ g_NxP.T
        norms = np.linalg.norm(g_NxP, axis=1)
        cos = gram / np.outer(norms, norms)
        i, j = np.triu_indices(ROWS, k=1)
        want["predictors/log_fisher_trace"].append(np.log(np.trace(gram)))
        want["predictors/top_eig_over_trace"].append(np.linalg.eigvalsh(gram)[-1]
                                                     / np.trace(gram))
        want["predictors/mean_abs_cos"].append(np.abs(cos[i, j]).mean())
    for name, value in want.items():
        assert got[name].shape == (len(groups),)
        np.testing.assert_allclose(got[name], value, rtol=0, atol=GRAD_TOL, err_msg=name)
    assert groups == ["layer_0", "layer_1", "embed", "final_norm"]


def test_sharded_matches_single_device(tiny_config):
    """The hook inside a `TrainProgram`'s Monitor on 8 devices (data=2, fsdp=2, tensor=2; 6 rows
    padded to 8, sharded over data x fsdp, micro-batches of 4) vs 1 device (6 rows at once),
    same params: every predictor metric within 1e-5."""
    c = tiny_config
    c.hooks.predictors.update(enabled=True, examples=ROWS)

    def metrics(devices):
        program = TrainProgram(c, devices=devices)
        (hook_data,) = program.place_hook_data()
        params = jax.device_put(_trained_params(program.model), program.param_shardings)
        out = jax.jit(lambda p, d: program.monitor(p, program.apply_fn, d, None))(
            params, [hook_data])
        return hook_data, {k: np.asarray(v, np.float64) for k, v in out.items()}

    rows_one, one = metrics(jax.devices()[:1])
    c.mesh.update(data=2, fsdp=2, tensor=2)
    c.hooks.micro_batch = 4
    rows_eight, eight = metrics(jax.devices())
    assert all(x.shape[0] == ROWS for x in jax.tree.leaves(rows_one))
    for x in jax.tree.leaves(rows_eight):  # padded, split over data x fsdp, not replicated
        assert x.shape[0] == 8 and x.sharding.spec[0] == ("data", "fsdp"), x.sharding
    assert sorted(one) == sorted(eight) and len(one) == 5
    for name, value in one.items():
        assert np.all(np.isfinite(value)), name
        np.testing.assert_allclose(eight[name], value, rtol=0, atol=SHARDED_TOL, err_msg=name)


def test_scanned_layers_match_looped(tiny_config, looped):
    """`model.scan_layers=True` with the looped model's params stacked: the same values."""
    loop_hook, _, loop_params, loop_values = looped
    _, _, scan_hook, scan_model = _setup(tiny_config, scan=True)
    assert scan_hook.param_groups == loop_hook.param_groups
    pure = loop_params.to_pure_dict()
    blocks = [pure["blocks"][i] for i in sorted(pure["blocks"])]
    pure["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
    scan_params = scan_model.init(0)
    nnx.replace_by_pure_dict(scan_params, pure)
    assert scan_params["blocks"]["attn"]["wq"][...].shape[0] == 2  # stacked
    scanned = _compute(scan_hook, scan_model, scan_params)
    for name, value in loop_values.items():
        assert np.all(np.isfinite(value)), name
        np.testing.assert_allclose(scanned[name], value, rtol=0, atol=SCAN_TOL, err_msg=name)


def test_probe_source_scores_the_correct_continuation(tiny_config):
    """source=probes: each row is [context | correct answer], its loss mask covers exactly the
    correct answer's tokens, and items come from the families in turn (the computation is the
    heldout source's, tested above)."""
    c, data, hook, _ = _setup(tiny_config, shards=1, micro_batch=0, source="probes")
    items = probe_items(c, data)
    families = sorted({it.family for it in items})
    rows = hook.rows
    assert len(rows["inputs"]) == ROWS
    firsts = [next(it for it in items if it.family == f) for f in families]
    for r, item in enumerate(firsts[:ROWS]):  # the first row of each family, in turn
        context, answer = answer_tokens(data.tokenizer, item.prompt, item.correct)
        mask = rows["loss_mask"][r] > 0
        assert rows["targets"][r][mask].tolist() == answer
        assert rows["inputs"][r][: len(context)].tolist() == context
        assert np.flatnonzero(mask)[0] == len(context) - 1
    assert np.all(rows["loss_mask"].sum(1) > 0)


def test_registry_and_refusals(tiny_config):
    """Off by default; on, `build_hooks` adds it with the model's capability; a model whose
    params differ from the declared groups, or fewer than 2 rows, are refused."""
    assert not tiny_config.hooks.predictors.enabled
    c, data, hook, model = _setup(tiny_config, shards=1, micro_batch=0)
    built = [h for h in build_hooks(c, data) if isinstance(h, PredictorHook)]
    assert len(built) == 1 and built[0].requires == {"layer_outputs"}
    with pytest.raises(HookError, match="at least 2 rows"):
        PredictorHook({k: v[:1] for k, v in hook.rows.items()}, 2, hook.param_groups)
    wrong = PredictorHook(hook.rows, 2, ("layer_0", "embed"))
    with pytest.raises(HookError, match="parameter groups"):
        jax.eval_shape(lambda p, d: wrong.compute(p, model.apply, d, None), model.init(0),
                       hook.data())
