"""`genjax analyze WORKDIR --explain`: what caused each hop, from the checkpoints around it.

For each hop with a saved checkpoint at or before the start of its change (`before`) and one
at or after its end (`after`); keep them with `checkpoint.keep` and `analysis.save_on_hop`:

- **Interpolation**: the probe hook, and the held-out loss of the family's domain, on params
  (1 - a) theta_before + a theta_after for `alphas` evenly spaced in [0, 1]. At a = 0 and 1
  these are the stored rows of those steps (checkpoint s holds the params metric row s
  evaluated). The barrier is the largest rise of the held-out loss above the straight line
  between its two ends (linear mode connectivity; without a held-out hook, the largest drop
  of the margin below its line); above BARRIER_SHARE of the larger of the ends' loss
  difference and the lower end's loss (of the margin's change) it reads "barrier: two
  separate solutions", else "no barrier: one basin moving" (a path whose loss falls all the
  way, bowed a little above its line, is one basin). The midpoint a = 0.5 is the average of the two.
- **Stability**: from `before`, `steps` steps rerun with another data order
  (`data.order_offset` = k x ORDER_STRIDE for each k in `orders`; k = 0 is a control that must
  reproduce the run's own rows) into WORKDIR/analysis/explain/hop<i>_order<k>, whose store
  starts as a copy of the run's (rows from `before` on are rewritten by the rerun); the hop
  "recurs" when the rerun's regime track of that family ends in the hop's new regime, and
  "when" is the first step of that final regime. A hop that recurs under other orders is
  driven by the optimizer's trajectory; one that does not, by the data it saw.

Runs with the run's own mesh (recorded in the stream) when this host has that many devices,
else on one device (sums in another order: rows then agree to float rounding, not bit for
bit).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genjax import paths
from genjax.analysis.analyze import AnalysisOptions, family_tracks
from genjax.analysis.regimes import NAMES, stable_runs
from genjax.config import ConfigDict
from genjax.hooks.monitor import Monitor

BARRIER_SHARE = 0.1  # a barrier counts above this share of the loss scale (see above)
ORDER_STRIDE = 1_000_003  # batches between the data orders of the stability reruns


def bracket(hop: dict, checkpoints: Sequence[int]) -> tuple[int | None, int | None]:
    """The last checkpoint at or before the hop's change starts, the first at or after it
    ends (a step change: its step)."""
    start = hop["change_start"] if hop.get("change_start", -1) >= 0 else hop["step"]
    end = hop["change_end"] if hop.get("change_end", -1) >= 0 else hop["step"]
    before = max((c for c in checkpoints if c <= start), default=None)
    after = min((c for c in checkpoints if c >= end), default=None)
    return before, after


def _program(config: ConfigDict, mesh: dict[str, int] | None):
    """The run's program with the mesh it ran on (`mesh`, from the stream's attributes) when
    this host has as many devices, else on one device; returns (program, config, devices)."""
    from genjax.train.trainer import TrainProgram

    used = ConfigDict(config.to_dict())
    size = int(np.prod(list(mesh.values()))) if mesh else 0
    if mesh and size <= len(jax.devices()):
        used.mesh.update({k: mesh[k] for k in ("data", "fsdp", "tensor")})
    else:
        used.mesh.update(data=1, fsdp=1, tensor=1)
        size = 1
    devices = jax.devices()[:size]
    return TrainProgram(used, devices=devices), used, devices


def interpolation(program, params_before, params_after, family: str,
                  alphas: np.ndarray) -> dict[str, Any]:
    """Along the straight line: the family's probe margin (`probes/soft_margin`) and
    accuracy, and the held-out loss of its domain (the family's prefix) where the run has a
    held-out hook; the loss barrier and the verdict."""
    unfused = Monitor(program.hooks, program.mesh, program.batch_axes, fuse=False)
    hooks = {h.name: (h, d) for h, d in zip(program.hooks, unfused.place())}
    probe, probe_data = hooks["probes"]
    families = list(next(s for s in probe.schema()
                         if s.name == "probes/soft_margin").labels["family"])
    f = families.index(family)
    held = hooks.get("heldout")
    domain = family.split("/", 1)[0]
    d = held[0].domains.index(domain) if held and domain in held[0].domains else None

    @jax.jit
    def along(p0, p1, alpha):
        mixed = jax.tree.map(lambda a, b: ((1 - alpha) * a + alpha * b).astype(a.dtype), p0, p1)
        out = probe.compute(mixed, program.apply_fn, probe_data, None)
        loss = (held[0].compute(mixed, program.apply_fn, held[1], None)["heldout/loss"][d]
                if d is not None else jnp.float32(jnp.nan))
        return out["probes/soft_margin"][f], out["probes/accuracy"][f], loss

    margin, accuracy, loss = (np.asarray(v, np.float64) for v in zip(
        *[[float(x) for x in along(params_before, params_after, np.float32(a))]
          for a in alphas]))
    mid = int(np.argmin(np.abs(alphas - 0.5)))
    record = {"alphas": [float(a) for a in alphas], "margin": margin.tolist(),
              "accuracy": accuracy.tolist(), "midpoint_margin": float(margin[mid]),
              "domain": domain if d is not None else None}
    if d is None:  # no held-out loss: the margin's dip below its straight line
        barrier = float(np.max(margin[0] + alphas * (margin[-1] - margin[0]) - margin))
        scale = abs(margin[-1] - margin[0])
    else:  # the loss barrier of linear mode connectivity
        record["heldout_loss"] = loss.tolist()
        barrier = float(np.max(loss - (loss[0] + alphas * (loss[-1] - loss[0]))))
        scale = float(max(abs(loss[-1] - loss[0]), min(loss[0], loss[-1])))
    record["barrier"] = barrier
    record["verdict"] = ("barrier: two separate solutions" if barrier > BARRIER_SHARE * scale
                         else "no barrier: one basin moving")
    return record


def stability_rerun(workdir: paths.Path, config: ConfigDict, devices: Sequence[jax.Device],
                    before: int, steps: int, order: int, name: str) -> paths.Path:
    """Reruns `steps` steps from checkpoint `before` with data order `order` into
    WORKDIR/analysis/explain/NAME; returns its workdir."""
    from genjax.stream import TensorStoreSink
    from genjax.train.trainer import Trainer

    sub = workdir / "analysis" / "explain" / name
    if sub.exists():
        sub.rmtree()
    (sub / "checkpoints").mkdir(parents=True)
    paths.copytree(workdir / "checkpoints" / str(before), sub / "checkpoints" / str(before))
    # the run's rows before `before` (the rerun rewrites the rest): its regimes' history, and
    # the spike detector's window primed exactly as in the run
    paths.copytree(workdir / "metrics", sub / "metrics")
    rerun = ConfigDict(config.to_dict())
    rerun.data.order_offset = config.data.order_offset + order * ORDER_STRIDE
    rerun.log.progress = "none"
    rerun.checkpoint.every = max(config.train.steps, 1)  # no checkpoints inside the rerun
    sink = TensorStoreSink(sub / "metrics", chunk_steps=config.stream.chunk_steps)
    Trainer(rerun, sub, sinks=[sink], devices=devices).run(
        stop_after=min(before + steps, config.train.steps))
    return sub


def recurrence(rerun, hop: dict, opts: AnalysisOptions) -> dict[str, Any]:
    """Whether the rerun's family track ends in the hop's new regime, and from which step."""
    tracks = family_tracks(rerun, opts)
    if hop["family"] not in tracks:
        return {"recurs": None, "step": None, "final": None}
    track, steps = tracks[hop["family"]]
    target = 1 if hop["direction"] == "to_generalizing" else -1
    runs = stable_runs(track.labels, 1)
    final = runs[-1][2] if runs and runs[-1][1] == len(steps) else 0
    recurs = final == target
    return {"recurs": bool(recurs), "final": NAMES[final],
            "step": int(steps[runs[-1][0]]) if recurs else None}


def explain(workdir: str | os.PathLike, run, result: dict, opts: AnalysisOptions,
            steps: int = 200, orders: Sequence[int] = (1,), alphas: int = 11) -> list[dict]:
    """Interpolation and stability for every hop of `result` (the run's analysis)."""
    import json

    from genjax.config import from_stored
    from genjax.stream.store import read
    from genjax.train.checkpoint import Checkpointer

    workdir = paths.as_path(workdir)
    config = from_stored(json.loads(run.attrs["config"]))
    program, config, devices = _program(config, run.attrs.get("mesh"))
    if not any(h.name == "probes" for h in program.hooks):
        return []
    ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint.every, 10**9, False)
    saved = ckpt.all_steps()
    abstract = program.abstract_args()[0]
    grid = np.linspace(0.0, 1.0, alphas)
    out = []
    for i, hop in enumerate(result["hops"]):
        before, after = bracket(hop, saved)
        record: dict[str, Any] = {"family": hop["family"], "step": hop["step"],
                                  "direction": hop["direction"], "before": before,
                                  "after": after}
        if before is None or after is None or before == after:
            record["skipped"] = (f"no saved checkpoint {'before' if before is None else 'after'}"
                                 f" the hop (saved: {saved[:8]}); keep more with "
                                 f"checkpoint.every/keep or analysis.save_on_hop")
            out.append(record)
            continue
        p0 = ckpt.restore(abstract, before)[0].params
        p1 = ckpt.restore(abstract, after)[0].params
        record["interpolation"] = interpolation(program, p0, p1, hop["family"], grid)
        reruns = []
        for k in orders:
            sub = stability_rerun(workdir, config, devices, before, steps, k, f"hop{i}_order{k}")
            rerun = read(sub / "metrics")
            reruns.append({"order": k, "workdir": str(sub), "rows": len(rerun),
                           **recurrence(rerun, hop, opts)})
        record["stability"] = reruns
        out.append(record)
    ckpt.close()
    return out
