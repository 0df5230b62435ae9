"""Resume checks: a workdir keeps the config and metric schema that define its run.

`WORKDIR/config.json` is written when a run starts from step 0. Resuming compares the new
config and schema with it before anything is restored or written: a difference stops with one
line naming the key and both values, unless the key is one of `SAFE_CHANGES`, which change how
the same run is computed, logged or saved, not what it is.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Sequence
from typing import Any

from genjax import paths
from genjax.config import ConfigDict, base_config, leaves
from genjax.hooks.base import MetricSpec

RUN_FILE = "config.json"

# key (fnmatch pattern) -> why it may change on resume; README "When something goes wrong"
SAFE_CHANGES = {
    "log.*": "progress cadence and style",
    "checkpoint.*": "checkpoint cadence, how many are kept, background saving",
    "stream.flush_every_s": "how often partial chunks are written",
    "stream.fsync": "durability of writes",
    "stream.overwrite": "acts only on a store whose schema differs, which resume refuses",
    "stream.tensorboard": "mirrors",
    "stream.wandb_project": "mirrors",
    "analysis.*": "hop detection and analysis settings",
    "data.prefetch": "host prefetch depth",
    "mesh.*": "the device mesh: the checkpoint is resharded on restore",
    "sharding_rules": "the device mesh: the checkpoint is resharded on restore",
    "train.grad_accum": "micro-batches of the same global batch",
    "train.on_nonfinite": "what a NaN/inf step does: resuming a stopped run with skip",
    "model.remat": "how the same step is computed",
    "model.attention": "how the same step is computed",
    "model.loss_chunk": "how the same step is computed",
    "hooks.micro_batch": "how the same hooks are computed",
    "hooks.gate": "how the same hooks are computed",
    "hooks.*.every": "hook cadence (same metrics, NaN on the steps a hook skips)",
    "train.steps": "only with optim.schedule='constant' and optim.warmup_steps below both "
                   "values (a cosine schedule decays over train.steps)",
}


class ResumeError(ValueError):
    """The workdir holds another run than the config describes."""


def spec_record(spec: MetricSpec) -> dict:
    return {"name": spec.name, "dims": list(spec.dims), "shape": list(spec.shape),
            "dtype": spec.dtype, "labels": {k: list(v) for k, v in spec.labels.items()}}


def run_record(config: ConfigDict, schema: Sequence[MetricSpec]) -> dict[str, Any]:
    """What defines a run, as JSON: the whole config and the metric schema."""
    import genjax

    return json.loads(json.dumps({"genjax_version": genjax.__version__,
                                  "config": config.to_dict(),
                                  "schema": [spec_record(s) for s in schema]}))


def read_record(workdir: str | os.PathLike) -> dict | None:
    path = paths.as_path(workdir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResumeError(f"cannot read {path}: {e}; it records the run this workdir holds "
                          "(restore it, or use a new --workdir)") from e
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ResumeError(f"{path} is not a genjax run record; use a new --workdir")
    return record


def write_record(workdir: str | os.PathLike, record: dict) -> None:
    """Atomically: a reader sees the old record or the new one."""
    paths.write_atomic(paths.as_path(workdir) / RUN_FILE,
                       json.dumps(record, indent=1, sort_keys=True))


def _safe(key: str, old: Any, new: Any, saved: dict, current: dict) -> bool:
    if key == "train.steps":
        schedule = (saved.get("optim.schedule"), current.get("optim.schedule"))
        warmup = max(saved.get("optim.warmup_steps", 0), current.get("optim.warmup_steps", 0))
        return schedule == ("constant", "constant") and warmup < min(old, new)
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in SAFE_CHANGES)


def config_differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every key that differs and is not a safe change.
    A key absent from the saved config (added to genjax since) matches when it has its
    default; a key genjax no longer has is ignored."""
    old, new = leaves(saved), leaves(current)
    defaults = leaves(json.loads(json.dumps(base_config().to_dict())))
    missing = object()
    out = []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key, missing), new.get(key, missing)
        if a == b:
            continue
        if a is missing and key in defaults and b == defaults[key]:
            continue
        if b is missing and key not in defaults and not key.startswith(
                ("data.domains.", "hooks.probes.files.")):
            continue
        if a is not missing and b is not missing and _safe(key, a, b, old, new):
            continue
        out.append((key, "(absent)" if a is missing else a, "(absent)" if b is missing else b))
    return out


def schema_differences(saved: list[dict], current: list[dict]) -> list[str]:
    old = {s["name"]: s for s in saved}
    new = {s["name"]: s for s in current}
    out = []
    for name in [*new, *(n for n in old if n not in new)]:
        a, b = old.get(name), new.get(name)
        if a is None:
            out.append(f"metric '{name}' is new")
        elif b is None:
            out.append(f"metric '{name}' is gone")
        elif a != b:
            what = next(k for k in ("shape", "dims", "dtype", "labels") if a.get(k) != b.get(k))
            shown = (a.get(what), b.get(what)) if what != "labels" else ("...", "...")
            out.append(f"metric '{name}' {what} {shown[0]} there, {shown[1]} now")
    return out


def check_resume(workdir: str | os.PathLike, record: dict, saved: dict) -> None:
    """Raises ResumeError (one line) when `record` (this config) is another run than `saved`
    (the workdir's)."""
    where = paths.as_path(workdir) / RUN_FILE
    diffs = config_differences(saved["config"], record["config"])
    if diffs:
        key, a, b = diffs[0]
        more = f"; also {', '.join(k for k, _, _ in diffs[1:4])}" if len(diffs) > 1 else ""
        more += " and more" if len(diffs) > 4 else ""
        hint = f" ({SAFE_CHANGES['train.steps']})" if key == "train.steps" else ""
        raise ResumeError(f"cannot resume {workdir}: {key}={b!r} now, but its run has "
                          f"{key}={a!r} ({where}){hint}{more}; use a new --workdir or the saved "
                          f"value")
    schema = schema_differences(saved.get("schema", []), record["schema"])
    if schema:
        more = f" (and {len(schema) - 1} more)" if len(schema) > 1 else ""
        raise ResumeError(f"cannot resume {workdir}: the metric schema differs from its run "
                          f"({where}): {schema[0]}{more}; the probe files or data changed? use a "
                          "new --workdir")
