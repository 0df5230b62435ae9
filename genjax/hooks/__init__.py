"""In-step hooks: the API (`base`), the built-in hooks, and `Monitor` for any training loop."""

from genjax.hooks.base import Hook, HookError, MetricSpec, RowsHook, StepContext, run_hooks
from genjax.hooks.domains import HeldoutHook, MemorizationHook, TrainDomainsHook
from genjax.hooks.fused import FusedPass, fuse
from genjax.hooks.monitor import Monitor
from genjax.hooks.probes import ProbeHook, load_probe_file
from genjax.hooks.registry import build_hooks

__all__ = ["FusedPass", "HeldoutHook", "Hook", "HookError", "MemorizationHook", "MetricSpec",
           "Monitor", "ProbeHook", "RowsHook", "StepContext", "TrainDomainsHook", "build_hooks",
           "fuse", "load_probe_file", "run_hooks"]
