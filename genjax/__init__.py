"""genjax: JAX-native LM pre-training with in-step generalization monitors.

Importing genjax does nothing global: no flags, no jax config, no backend or device queries.
The public names below load their modules on first use; everything else is private by
convention (each subpackage's `__all__` lists its public names).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    # configs
    "base_config": ("genjax.config", "base_config"),
    "load_config": ("genjax.config", "load"),
    # training: the whole trainer, or only its pure step
    "Trainer": ("genjax.train.trainer", "Trainer"),
    "TrainProgram": ("genjax.train.trainer", "TrainProgram"),
    "TrainResult": ("genjax.train.trainer", "TrainResult"),
    "TrainState": ("genjax.train.step", "TrainState"),
    "make_train_step": ("genjax.train.step", "make_train_step"),
    # models
    "LanguageModel": ("genjax.model.lm", "LanguageModel"),
    "ModelConfig": ("genjax.model.transformer", "ModelConfig"),
    "from_nnx": ("genjax.model.lm", "from_nnx"),
    "from_linen": ("genjax.model.lm", "from_linen"),
    "transformer": ("genjax.model.lm", "transformer"),
    # hooks in any loop
    "Hook": ("genjax.hooks.base", "Hook"),
    "MetricSpec": ("genjax.hooks.base", "MetricSpec"),
    "StepContext": ("genjax.hooks.base", "StepContext"),
    "run_hooks": ("genjax.hooks.base", "run_hooks"),
    "Monitor": ("genjax.hooks.monitor", "Monitor"),
    "build_hooks": ("genjax.hooks.registry", "build_hooks"),
    # the metric stream
    "Sink": ("genjax.stream.sinks", "Sink"),
    "BaseSink": ("genjax.stream.sinks", "BaseSink"),
    "MemorySink": ("genjax.stream.sinks", "MemorySink"),
    "TensorStoreSink": ("genjax.stream.store", "TensorStoreSink"),
    "RowFetcher": ("genjax.stream.rows", "RowFetcher"),
    "MetricWriter": ("genjax.stream.writer", "MetricWriter"),
    "open_stream": ("genjax.stream.store", "open"),
    # analysis
    "analyze": ("genjax.analysis.analyze", "analyze"),
    "analyze_workdir": ("genjax.analysis.report", "analyze_workdir"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'genjax' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
