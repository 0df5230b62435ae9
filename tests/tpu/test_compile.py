"""`genjax compile`: a TPU slice's compile-only devices from libtpu, on a CPU host.

Memory figures are checked against sizes worked out here from the model's shapes and the
sharding rules; the hooks' FLOPs against the analytic FLOPs of their forward passes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import cli
from genjax.config import load
from genjax.hooks.base import MetricSpec
from genjax.model import ModelConfig
from genjax.sharding import MeshError, make_mesh
from genjax.tpu import compile as tc
from genjax.train.trainer import TrainProgram

# Before anything in this session loads libtpu: its lockfile (meant for real chips) would fail
# this process whenever another one holds it, e.g. a training test's subprocess.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
TINY = str(CONFIGS / "tiny.py")
# A persistent compilation cache (tests/conftest.py) stores these compile-only TPU programs but
# cannot load them back (no TPU client); jax warns and compiles again.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Error reading persistent compilation cache entry:UserWarning")
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason='needs libtpu: pip install -e ".[tpu]"')


def run_cli(monkeypatch, *args: str) -> int:
    """`genjax compile ARGS` in-process. ml-collections' config_flags reads `--config.*`
    overrides from sys.argv, so sys.argv is made to match."""
    argv = ["genjax", "compile", *args]
    monkeypatch.setattr("sys.argv", argv)
    return cli.main(argv)


def tiny(**model):
    """configs/tiny.py on a 2 x 2 fsdp x tensor mesh (4 chips), hooks off, XLA attention (its
    32-token rows are too short for splash, which `model.attention=auto` picks on TPU)."""
    c = load(TINY)
    for name in c.hooks:
        if hasattr(c.hooks[name], "enabled"):  # hooks.micro_batch is a plain setting
            c.hooks[name].enabled = False
    c.mesh.update(data=1, fsdp=2, tensor=2)
    c.model.update(**{"attention": "xla", **model})
    return c


XLA = "--config.model.attention=xla"  # tiny's 32-token rows are too short for splash


# ------------------------------------------------------------------------ topology names
@pytest.mark.parametrize("name, topology, chips", [
    ("v5e:4x4", "v5e:4x4", 16), ("v5p:2x2x1", "v5p:2x2x1", 4), ("v4:2x2x2", "v4:2x2x2", 8),
    ("v6e:4x4", "v6e:4x4", 16), ("v5e-256", "v5e:16x16", 256), ("v5e-8", "v5e:2x4", 8),
    ("v5p-8", "v5p:2x2x1", 4), ("v5p-128", "v5p:4x4x4", 64), ("v4-64", "v4:2x4x4", 32),
    ("v6e-256", "v6e:16x16", 256), ("V5litepod-16", "v5e:4x4", 16), ("v5p-32", "v5p:2x2x4", 16),
])
def test_parse_topology(name, topology, chips):
    topo = tc.parse_topology(name)
    assert (topo.name, topo.chips) == (topology, chips)
    assert tc.parse_topology(topo.friendly_name) == topo  # the Cloud name round-trips


@pytest.mark.parametrize("name, match", [
    ("v9:2x2", "unknown topology"), ("v5e:2x2x1", "2 dimensions"), ("v5p:4x4", "3 dimensions"),
    ("v5p-6", "power-of-two"), ("v5e-12", "power-of-two"), ("v5e:32x32", "largest v5e slice"),
])
def test_parse_topology_rejects(name, match):
    with pytest.raises(tc.CompileError, match=match):
        tc.parse_topology(name)


def test_parse_topology_multislice():
    topo = tc.parse_topology("v5e-16", num_slices=4)
    assert (topo.chips_per_slice, topo.chips) == (16, 64)
    with pytest.raises(tc.CompileError, match="num_slices"):
        tc.parse_topology("v5e-16", num_slices=0)


def test_without_libtpu_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "libtpu" else real(name, *a))
    assert run_cli(monkeypatch, "--config", TINY, "--topology", "v5e:2x2") == 2
    assert 'pip install -e ".[tpu]"' in capsys.readouterr().err


# ------------------------------------------------------------------------ compiling
def expected_state_bytes(cfg: ModelConfig, shards: int) -> tuple[int, int]:
    """Per-chip (params, AdamW state) bytes, from shapes: with fsdp x tensor = `shards` and the
    default rules every matrix splits `shards` ways, the RMSNorm scales are replicated."""
    norm = (2 * cfg.n_layers + 1) * cfg.d_model
    itemsize = np.dtype(cfg.param_dtype).itemsize
    params = ((cfg.num_params() - norm) // shards + norm) * itemsize
    return params, 2 * params  # mu and nu; the int32 step counters are checked separately


@needs_libtpu
@pytest.mark.parametrize("topology", ["v5e:2x2", pytest.param("v5p:2x2x1", marks=pytest.mark.slow)])
def test_memory_matches_sharded_state(topology):
    config = tiny()
    report = tc.compile_report(config, tc.parse_topology(topology))
    mem = report["memory_per_chip"]
    assert report["chips"] == 4 and report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    params, opt = expected_state_bytes(ModelConfig.from_config(config.model), shards=4)
    assert mem["params"] == params
    assert opt <= mem["optimizer_state"] <= opt + 16  # + adam's and the schedule's counters
    # Other inputs: this chip's half of the batch (batch axes data x fsdp: 2 ways) as int32
    # inputs, targets, domain and float32 loss_mask, plus the step and the rng key.
    rows, t = config.train.batch_size // 2, config.train.seq_len
    batch = 3 * rows * t * 4 + rows * 4 + 4 + 8
    assert mem["other_inputs"] >= batch
    assert mem["params"] + mem["optimizer_state"] + mem["other_inputs"] + mem["temporaries"] \
        <= mem["total"] <= mem["hbm"]
    assert mem["fits"] and report["hooks"]["names"] == []
    w = report["with_hooks"]
    assert w["est_flops_per_chip"] > 0 and w["est_step_seconds"] > 0
    assert 0 < w["est_mfu"] < 1
    assert "est. step time" in tc.format_report(report)


@needs_libtpu
def test_cli_writes_json_and_refuses_oversized_state(tmp_path, capsys, monkeypatch):
    out = tmp_path / "report.json"
    assert run_cli(monkeypatch, "--config", TINY, "--topology", "v5e:2x2", XLA,
                   "--out", str(out)) == 0
    stdout = capsys.readouterr().out
    assert "memory per chip" in stdout and "fits" in stdout
    assert json.loads(out.read_text())["topology"] == "v5e:2x2"
    # 2 layers of 8192 x 65536 SwiGLU: ~3.2G f32 params + AdamW, replicated: ~39 GiB a chip.
    rc = run_cli(monkeypatch, "--config", TINY, "--topology", "v5e:2x2", XLA,
                   "--config.model.d_model=8192", "--config.model.d_ff=65536")
    err = capsys.readouterr().err
    assert rc == 2 and "does not fit" in err and "v5e has 16 GiB" in err
    needed = float(err.split("needs ")[1].split(" GiB")[0])
    assert math.isclose(needed, 3 * 4 * ModelConfig.from_config(
        tiny(d_model=8192, d_ff=65536).model).num_params() / 2**30, rel_tol=1e-3)


@needs_libtpu
def test_cli_refuses_when_activations_exceed_hbm(capsys, monkeypatch):
    rc = run_cli(monkeypatch, "--config", TINY, "--topology", "v5e:2x2", XLA,
                   "--config.train.batch_size=16384", "--config.train.seq_len=1024")
    err = capsys.readouterr().err
    assert rc == 2 and "does not fit" in err and "v5e has 16 GiB" in err, err


@needs_libtpu
def test_mesh_that_does_not_match_the_chips(capsys, monkeypatch):
    rc = run_cli(monkeypatch, "--config", TINY, "--topology", "v5p:2x2x1",
                   "--config.mesh.data=3")
    err = capsys.readouterr().err
    assert rc == 2 and "v5p:2x2x1 (v5p-8), 4 chips" in err and "3 devices" in err, err


@needs_libtpu
def test_multislice_data_axis_spans_slices():
    config = tiny()
    config.mesh.update(data=2, fsdp=-1, tensor=1)
    topo = tc.parse_topology("v5e:2x2", num_slices=2)
    devices = tc.topology_devices(topo)
    mesh = TrainProgram(config, devices=devices, hooks=[]).mesh  # what training builds too
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert [{d.slice_index for d in row.flat} for row in mesh.devices] == [{0}, {1}]
    config.mesh.update(data=1, fsdp=-1)
    with pytest.raises(MeshError, match="data axis must span"):
        make_mesh(config.mesh, devices)


@needs_libtpu
def test_multislice_mesh_of_larger_slices():
    config = tiny()
    config.mesh.update(data=2, fsdp=-1, tensor=1)
    config.train.batch_size = 16  # 2 slices x 8 chips
    topo = tc.parse_topology("v5e:2x4", num_slices=2)
    mesh = TrainProgram(config, devices=tc.topology_devices(topo), hooks=[]).mesh
    assert [{d.slice_index for d in row.flat} for row in mesh.devices] == [{0}, {1}]


@dataclasses.dataclass
class ForwardHook:
    """A hook with a known cost: one forward pass over [rows, seq_len] tokens of its own."""

    tokens: np.ndarray
    name: str = "forward"
    every: int = 1

    def schema(self):
        return (MetricSpec("forward/logsumexp"),)

    def data(self):
        return {"tokens": self.tokens}

    def compute(self, params, apply_fn, data, ctx):
        logits = apply_fn(params, data["tokens"])
        return {"forward/logsumexp": jnp.mean(jax.nn.logsumexp(logits, axis=-1))}


@needs_libtpu
@pytest.mark.slow  # 16 s of TPU compiles
def test_hook_share_matches_analytic_forward_flops():
    # Wide enough that matmuls dominate XLA's count (norms, softmax and RoPE are the rest):
    # measured 2% above the matmul + attention FLOPs at this size, 10% at d_model=32.
    config = tiny(d_model=128, d_ff=512, head_dim=32)
    rows, t = 16, config.train.seq_len
    hook = ForwardHook(np.zeros((rows, t), np.int32))
    report = tc.compile_report(config, tc.parse_topology("v5e:2x2"), hooks=[hook])
    cfg = ModelConfig.from_config(config.model)
    matmul = cfg.num_params(include_embedding=False) + cfg.vocab_size * cfg.d_model
    attention = 4 * cfg.n_layers * t * cfg.n_heads * cfg.head_dim  # full T x T, as XLA runs it
    analytic = (2 * matmul + attention) * rows * t
    w, wo, chips = report["with_hooks"], report["without_hooks"], report["chips"]
    # Whole program (split evenly) and the compiled per-chip program: both add the forward.
    extra_program = w["est_program_flops_per_chip"] - wo["est_program_flops_per_chip"]
    extra_compiled = w["est_flops_per_chip"] - wo["est_flops_per_chip"]
    assert extra_program == pytest.approx(analytic / chips, rel=0.05)
    assert extra_compiled == pytest.approx(analytic / chips, rel=0.05)
    assert report["hooks"]["names"] == ["forward"]
    assert report["hooks"]["est_flops_share"] == pytest.approx(
        extra_program / w["est_program_flops_per_chip"])
    assert 0 < report["hooks"]["est_step_time_share"] < 1


def test_notes_flag_undercounted_and_replicated_flops():
    config = tiny()
    section = lambda compiled, even: {"est_flops_per_chip": compiled,
                                      "est_program_flops_per_chip": even}
    notes = tc._notes(config, {"with_hooks": section(1.5, 1.0),
                               "without_hooks": section(0.7, 1.0)},
                      {"est_bytes_accessed_share": -0.01})
    assert any("with hooks: each chip computes 50% more" in n for n in notes)
    assert any("without hooks: the compiled per-chip FLOPs are 30% below" in n for n in notes)
    assert any("fewer bytes accessed" in n for n in notes)
    assert len(tc._notes(config, {"with_hooks": section(1.0, 1.0)},
                         {"est_bytes_accessed_share": None})) == 1


def test_notes_say_when_optimal_seconds_is_not_usable_for_every_program():
    config = tiny()
    section = lambda optimal: {"est_flops_per_chip": 1.0, "est_program_flops_per_chip": 1.0,
                               "est_compiler_seconds": optimal}
    shares = {"est_bytes_accessed_share": 0.1}
    notes = tc._notes(config, {"with_hooks": section(None), "without_hooks": section(2.5)},
                      shares)
    said = [n for n in notes if "optimal_seconds" in n]
    assert said == ["time: XLA's optimal_seconds (with hooks none (absent or not positive), "
                    "without hooks 2.5 s) is not usable for every program, so all are timed "
                    "by the roofline, to compare like with like"]
    both = {"with_hooks": section(3.0), "without_hooks": section(2.5)}
    assert not [n for n in tc._notes(config, both, shares) if "optimal_seconds" in n]


@needs_libtpu
def test_tpu_estimates_benchmark(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(CONFIGS.parent / "benchmarks"))
    import tpu_estimates

    out = tmp_path / "estimates.json"
    assert tpu_estimates.main(["--runs", "tiny@v5e:2x2+model.attention=xla,tiny@v5e:3x3",
                               "--out", str(out)]) == 0
    ok, refused = json.loads(out.read_text())
    assert ok["preset"] == "tiny+model.attention=xla" and ok["chips"] == 4
    assert ok["attention"] == "xla" and "with_hooks" in ok
    assert ok["model"]["model_seconds_at_peak"] > 0
    assert refused["topology"] == "v5e:3x3" and "libtpu cannot describe" in refused["error"]
    table = capsys.readouterr().out
    assert table.count("\n| tiny") == 2
    # --no_estimates: memory and compile time, no estimate from a program with loops
    assert tpu_estimates.main(["--runs", "tiny@v5e:2x2+model.scan_layers=True",
                               "--no_estimates", "--out", str(out)]) == 0
    (quick,) = json.loads(out.read_text())
    assert not quick["with_hooks"]["estimate_compiled_unrolled"]
    row = capsys.readouterr().out.splitlines()[-1].split(" | ")
    assert row[5:9] == ["-"] * 4 and row[-1].count("/") == 1  # est. steps, MFUs; compile s


# ------------------------------------------------------------------------ loops and kernels
def test_unrolled_loops_counts_every_iteration():
    """XLA's cost model counts a loop body once; under `unrolled_loops` a lax.scan and a
    lax.map (the chunked loss, hook micro-batches) count every iteration (CPU, lowered)."""
    x = jax.ShapeDtypeStruct((8, 64, 64), jnp.float32)
    w = jax.ShapeDtypeStruct((64, 64), jnp.float32)
    matmul = 2 * 64 * 64 * 64

    def f(x, w):  # a new function per trace: jax caches traces by function
        scanned = jax.lax.scan(lambda c, xi: (c + jnp.sum(xi @ w), None), 0.0, x)[0]
        return scanned + jnp.sum(jax.lax.map(lambda xi: xi @ w, x))

    looped = jax.jit(f).lower(x, w).cost_analysis()["flops"]
    with tc.unrolled_loops():
        unrolled = jax.jit(lambda x, w: f(x, w)).lower(x, w).cost_analysis()["flops"]
    assert jax.lax.scan.__name__ == "scan"  # restored
    assert looped == pytest.approx(2 * matmul, rel=0.05)  # + the sums
    assert unrolled == pytest.approx(2 * 8 * matmul, rel=0.05)


@needs_libtpu
@pytest.mark.slow  # 29 s of TPU compiles
def test_scanned_estimate_equals_unrolled_program():
    """The report of a scanned-layers step: memory from the scanned program, FLOPs, bytes and
    time from the same step unrolled, which equal those of the Python-loop step (no loops)."""
    topo = tc.parse_topology("v5e:2x2")
    loop = tc.compile_report(tiny(n_layers=4, loss_chunk=0), topo)
    scan = tc.compile_report(tiny(n_layers=4, loss_chunk=0, scan_layers=True), topo)
    lw, sw = loop["with_hooks"], scan["with_hooks"]
    assert lw["loops_in_program"] == 0 and not lw["estimate_compiled_unrolled"]
    assert sw["loops_in_program"] > 0 and sw["estimate_compiled_unrolled"]
    assert sw["loops_in_estimate"] == 0
    for key in ("est_flops_per_chip", "est_program_flops_per_chip",
                "est_bytes_accessed_per_chip"):
        assert sw[key] == pytest.approx(lw[key], rel=0.02), key
    # the scanned program's own count has the 4 layers' body once: far below
    assert sw["program_xla_flops_per_chip"] < 0.6 * lw["est_flops_per_chip"]
    assert any(n.startswith("loops: the program that runs has") for n in scan["notes"])
    # estimates=False: the same memory, no unrolled compile, the loop bodies counted once
    quick = tc.compile_report(tiny(n_layers=4, loss_chunk=0, scan_layers=True), topo,
                              estimates=False)
    qw = quick["with_hooks"]
    assert quick["memory_per_chip"] == scan["memory_per_chip"]
    assert not qw["estimate_compiled_unrolled"] and qw["estimate_compile_seconds"] is None
    assert qw["est_program_flops_per_chip"] is None
    assert qw["est_flops_per_chip"] == qw["program_xla_flops_per_chip"]
    assert qw["program_xla_flops_per_chip"] == pytest.approx(sw["program_xla_flops_per_chip"],
                                                             rel=0.02)
    assert any("no unrolled estimate was compiled" in n for n in quick["notes"])


def splash_tiny(**model):
    """A bf16 step small enough to compile in seconds whose rows splash accepts (T = 256)."""
    c = tiny(**{"attention": "splash", "compute_dtype": "bfloat16", "d_model": 64,
                "head_dim": 16, "loss_chunk": 0, **model})
    c.train.seq_len = 256
    return c


@pytest.fixture(scope="module")
def splash_hlo():
    """(program, cost, compiled HLO text) of the tiny bf16 splash step on v5e:2x2."""
    topo = tc.parse_topology("v5e:2x2")
    devices = tc.topology_devices(topo)
    program = TrainProgram(splash_tiny(), devices=devices, hooks=[])
    hlo: list[str] = []
    cost = tc.compile_program(program, topo, hlo_out=hlo)
    return program, cost, hlo[0]


@needs_libtpu
def test_splash_kernels_counted_analytically(splash_hlo):
    program, cost, hlo = splash_hlo
    assert program.attention == "splash" and "tpu_custom_call" in hlo
    cfg = program.model_cfg
    layers = cfg.n_layers
    # no remat, no loops: per layer one forward, one dq and one dkv kernel
    assert cost.loops == 0 and cost.kernels.calls == {"fwd": layers, "dq": layers,
                                                      "dkv": layers}
    t, rows = program.config.train.seq_len, program.config.train.batch_size // 2  # fsdp 2
    heads = cfg.n_heads // 2  # tensor 2
    visible, blocks = tc.mask_fractions(t)
    assert visible == pytest.approx((t + 1) / (2 * t)) and blocks == 1.0  # one 256 block
    square = 2.0 * rows * heads * t * t * cfg.head_dim
    assert cost.kernels.flops == pytest.approx(layers * (2 + 3 + 4) * square * visible)
    # the report adds them to XLA's count and their time at the stated fraction of peak
    peak = 197e12
    section = tc._cost_section(cost, None, 4, peak, 8.19e11, 1e12, False,
                               kernel_efficiency=0.25)
    assert section["est_flops_per_chip"] == pytest.approx(cost.flops + cost.kernels.flops)
    assert section["est_kernel_seconds"] == pytest.approx(cost.kernels.flops / (0.25 * peak))
    assert section["est_step_seconds"] == pytest.approx(
        max(cost.flops / peak, cost.bytes_accessed / 8.19e11) + section["est_kernel_seconds"])
    assert "25% of peak (assumed)" in section["est_step_seconds_source"]


def _f32_score_buffers(hlo: str, rows: int, heads: int, t: int) -> list[str]:
    """f32 shapes in the HLO with this chip's rows, heads and a T x T square: attention
    scores (any dim order; GQA may split heads into kv heads x group)."""
    found = []
    for dims in set(re.findall(r"\bf32\[([\d,]+)\]", hlo)):
        d = [int(x) for x in dims.split(",")]
        if d.count(t) >= 2 and rows in d and math.prod(d) >= rows * heads * t * t:
            found.append(f"f32[{dims}]")
    return found


@needs_libtpu
def test_bf16_splash_step_has_no_f32_score_buffer(splash_hlo):
    program, _, hlo = splash_hlo
    rows, heads, t = 4, program.model_cfg.n_heads // 2, program.config.train.seq_len
    assert _f32_score_buffers(hlo, rows, heads, t) == []
    topo = tc.parse_topology("v5e:2x2")
    xla = TrainProgram(splash_tiny(attention="xla"), devices=tc.topology_devices(topo),
                       hooks=[])
    xla_hlo: list[str] = []
    tc.compile_program(xla, topo, hlo_out=xla_hlo)
    assert "tpu_custom_call" not in xla_hlo[0]
    assert _f32_score_buffers(xla_hlo[0], rows, heads, t)  # the check can fail


@needs_libtpu
def test_hook_rows_are_sharded_not_replicated():
    """Every hook's eval rows split over the chips: per-chip hook data halves from 4 to 8
    chips, and the chips together hold each padded row once."""
    import tiny as tiny_preset

    per_chip = {}
    for topology in ("v5e:2x2", "v5e:2x4"):
        config = tiny_preset.with_all_hooks(tiny())
        config.mesh.update(data=1, fsdp=-1, tensor=1)
        topo = tc.parse_topology(topology)
        program = TrainProgram(config, devices=tc.topology_devices(topo))
        hook_data = program.abstract_args()[2]
        rows = [x for x in jax.tree.leaves(hook_data) if x.ndim]
        assert rows and all(x.sharding.shard_shape(x.shape)[0] * topo.chips == x.shape[0]
                            for x in rows)
        total = sum(x.size * x.dtype.itemsize for x in rows)
        per_chip[topo.chips] = tc.bytes_per_chip(hook_data)
        assert per_chip[topo.chips] == pytest.approx(total / topo.chips, rel=0.01)
    assert per_chip[8] < 0.7 * per_chip[4]  # replicated rows would keep it the same
