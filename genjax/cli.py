"""`genjax` command line: train, metrics, analyze, compile.

Flags are parsed here, at call time, into a fresh absl FlagValues (nothing global at import).
Config overrides follow ml-collections `config_flags`: `--config.train.steps=500`.
"""

from __future__ import annotations

import os
import sys

USAGE = """usage: genjax COMMAND [flags]

commands:
  train    --config FILE --workdir DIR [--config.KEY=VALUE ...]   train (resumes from DIR)
  metrics  WORKDIR [--csv FILE] [--follow]                         latest value of each metric
  analyze  WORKDIR [--beta B] [--smooth W] [--min_regime_steps N]  mode analysis -> WORKDIR/analysis
  compile  --config FILE --topology v5e:4x4 [--num_slices N]       compile for a TPU slice on CPU
"""


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _flags(argv: list[str], define, positional: int = 0) -> tuple[object, list[str]]:
    """Parses argv into a fresh FlagValues; exactly `positional` other arguments allowed."""
    from absl import flags

    fv = flags.FlagValues()
    define(flags, fv)
    try:
        rest = fv(argv)
    except flags.Error as e:
        raise CliError(str(e)) from e
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # from config_flags
        detail = " ".join(str(e).replace("\\n", " ").replace("\n", " ").strip("'\"").split())
        raise CliError(f"bad config override: {detail}") from e
    if len(rest) - 1 != positional:
        raise CliError(f"expected {positional} positional argument(s), got {rest[1:]}")
    return fv, rest[1:]


def _define_config(flags, fv, argv: list[str]) -> None:
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "config file (get_config())",
                                    flag_values=fv, lock_config=True, sys_argv=argv)


def _load_config(fv):
    from genjax.config import validate

    if fv["config"].value is None:
        raise CliError("--config is required")
    return validate(fv["config"].value)


def _setup_devices(fv) -> None:
    """Before the first jax call: virtual CPU devices and multi-host initialization."""
    if fv["cpu_devices"].value:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count="
                                   f"{fv['cpu_devices'].value}").strip()
    mode = fv["distributed"].value
    if mode == "off":
        return
    import jax

    if fv["coordinator"].value:  # explicit coordinator: CPU/GPU clusters, local tests
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; harmless
        jax.distributed.initialize(fv["coordinator"].value, fv["num_processes"].value,
                                   fv["process_id"].value)
    elif mode == "on":
        jax.distributed.initialize()  # TPU pods and SLURM/GKE: discovered automatically


def cmd_train(argv: list[str]) -> int:
    def define(flags, fv):
        _define_config(flags, fv, argv)
        flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics)",
                            flag_values=fv)
        flags.DEFINE_integer("cpu_devices", 0, "virtual CPU devices (testing meshes)",
                             flag_values=fv)
        flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                          "multi-host initialization", flag_values=fv)
        flags.DEFINE_string("coordinator", "", "host:port of process 0", flag_values=fv)
        flags.DEFINE_integer("num_processes", 1, "processes in the job", flag_values=fv)
        flags.DEFINE_integer("process_id", 0, "this process's index", flag_values=fv)
        flags.DEFINE_integer("stop_after", 0, "stop after this many steps (0: run to the end)",
                             flag_values=fv)
        flags.DEFINE_bool("heap_malloc", True, "CPU backend: keep XLA's large per-step "
                          "buffers in glibc's heap instead of mapping them afresh every step "
                          "(genjax.perf.keep_large_allocations_in_heap)", flag_values=fv)

    fv, _ = _flags(argv, define)
    config = _load_config(fv)
    if not fv["workdir"].value:
        raise CliError("--workdir is required")
    _setup_devices(fv)
    import jax

    from genjax.perf import keep_large_allocations_in_heap
    from genjax.train.run import run_training

    if fv["heap_malloc"].value and jax.default_backend() == "cpu":
        keep_large_allocations_in_heap()

    run_training(config, fv["workdir"].value, stop_after=fv["stop_after"].value or None)
    return 0


def cmd_metrics(argv: list[str]) -> int:
    def define(flags, fv):
        flags.DEFINE_string("csv", "", "also export every scalar series to this CSV file",
                            flag_values=fv)
        flags.DEFINE_boolean("follow", False, "keep printing as the run writes",
                             flag_values=fv)

    fv, rest = _flags(argv, define, positional=1)
    from genjax.stream.cli import show_metrics

    return show_metrics(rest[0], csv=fv["csv"].value, follow_run=fv["follow"].value)


def cmd_analyze(argv: list[str]) -> int:
    def define(flags, fv):
        flags.DEFINE_float("beta", 3.0, "change-point penalty in units of sigma^2 log(n)",
                           flag_values=fv)
        flags.DEFINE_integer("smooth", 1, "moving-average window before change points",
                             flag_values=fv)
        flags.DEFINE_integer("min_regime_steps", 0, "rows a regime must last to count "
                             "(0: the run's config.analysis.min_regime_steps)", flag_values=fv)

    fv, rest = _flags(argv, define, positional=1)
    from genjax.analysis.analyze import AnalysisOptions
    from genjax.analysis.report import analyze_workdir

    custom = {k: v for k, v in (("beta", fv["beta"].value), ("smooth_window", fv["smooth"].value),
                                 ("min_regime_steps", fv["min_regime_steps"].value))
              if v != AnalysisOptions.__dataclass_fields__[k].default and v}
    out = analyze_workdir(rest[0], AnalysisOptions(**custom) if custom else None)
    print(f"analysis written to {out}")
    return 0


def cmd_compile(argv: list[str]) -> int:
    def define(flags, fv):
        _define_config(flags, fv, argv)
        flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:4x4, v5p:2x2x1, v5e-256",
                            flag_values=fv)
        flags.DEFINE_integer("num_slices", 1, "number of slices (multi-slice)", flag_values=fv)
        flags.DEFINE_string("out", "", "write the report as JSON here", flag_values=fv)

    fv, _ = _flags(argv, define)
    config = _load_config(fv)
    if not fv["topology"].value:
        raise CliError("--topology is required")
    from genjax.tpu.compile import compile_command

    return compile_command(config, fv["topology"].value, fv["num_slices"].value,
                           fv["out"].value)


COMMANDS = {"train": cmd_train, "metrics": cmd_metrics, "analyze": cmd_analyze,
            "compile": cmd_compile}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command not in COMMANDS:
        print(f"genjax: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from genjax.errors import user_errors

    try:
        return COMMANDS[command]([f"genjax {command}"] + argv[2:])
    except (CliError, *user_errors()) as e:
        print(f"genjax {command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
