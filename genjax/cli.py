"""`genjax` command line: train, metrics, analyze, compare, compile, config.

Flags are parsed here, at call time, into a fresh absl FlagValues (nothing global at import).
Config overrides follow ml-collections `config_flags`: `--config.train.steps=500`.
"""

from __future__ import annotations

import os
import re
import sys
import traceback

USAGE = """usage: genjax COMMAND [flags]     (genjax COMMAND --help: its flags)

commands:
  train    --config FILE --workdir DIR [--config.KEY=VALUE ...]   train (resumes from DIR)
  metrics  WORKDIR [--csv FILE] [--follow]                         latest value of each metric
  analyze  WORKDIR [--beta B] [--smooth W] [--min_regime_steps N] [--margin_floor F] [--level L]
           mode analysis -> WORKDIR/analysis (flags given override the run's config.analysis)
  compare  RUN [RUN ...] [--out DIR]                               runs against steps, tokens, FLOPs
  sweep    --config FILE --grid KEY=V1,V2 [--grid ...] --workdir DIR [--parallel N]
           one run per grid point in DIR/<point>, then compare them -> DIR/compare
  compile  --config FILE --topology v5e:4x4 [--num_slices N]       compile for a TPU slice on CPU
  config   show FILE [--config.KEY=VALUE ...]                      each key: value, default, meaning
  data     prepare INPUT [INPUT ...] --out DIR --tokenizer_file F  tokenize files into token shards

every command: --verbose prints the traceback of an error too
"""

COMMAND_USAGE = {
    "train": "genjax train --config FILE --workdir DIR [--config.KEY=VALUE ...] [flags]\n"
             "  trains, or resumes the run in DIR; --helpfull also lists every config key",
    "metrics": "genjax metrics WORKDIR [flags]\n  the latest value of every metric of a run",
    "analyze": "genjax analyze WORKDIR [flags]\n  change points, regimes and hops -> "
               "WORKDIR/analysis",
    "compare": "genjax compare RUN [RUN ...] [--out DIR]\n  overlays runs per metric against "
               "steps, tokens and training FLOPs; hop timing per run and across model size",
    "sweep": "genjax sweep --config FILE --grid KEY=V1,V2,... [--grid ...] --workdir DIR\n"
             "  runs every grid point as a genjax train run in DIR/<point>, then compares them",
    "compile": "genjax compile --config FILE --topology T [--config.KEY=VALUE ...] [flags]\n"
               "  compiles the sharded step for a TPU slice on this host (needs .[tpu])",
    "data": "genjax data prepare INPUT [INPUT ...] --out DIR [flags]\n"
            "  tokenizes .txt/.jsonl/.parquet files (paths or globs, local or gs://) into token "
            "shards and a manifest; the same command resumes an interrupted run",
    "config": "genjax config show FILE [--config.KEY=VALUE ...]\n"
              "  the resolved config: every key with its value, its default where it differs, "
              "and its meaning",
}
HELP_FLAGS = ("-h", "-help", "--help", "--helpshort", "-helpfull", "--helpfull")
CONFIG_HELP = ("config file defining get_config() (configs/*.py); override any key with "
               "--config.KEY=VALUE, probe files with --config.hooks.probes.files.NAME=PATH")


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class HelpShown(Exception):
    """--help was asked for and printed: exit status 0."""


def _flags(argv: list[str], define, positional: int = 0,
           with_config: bool = False) -> tuple[object, list[str]]:
    """Parses argv into a fresh FlagValues; exactly `positional` other arguments allowed
    (at least -`positional` when negative).
    `with_config`: `--config FILE` and its `--config.KEY=VALUE` overrides (`fv["config"]`)."""
    from absl import flags

    fv = flags.FlagValues()
    flags.DEFINE_bool("verbose", False, "on an error, print its traceback too", flag_values=fv)
    define(flags, fv)
    asked = [a for a in argv[1:] if a.split("=")[0] in HELP_FLAGS]
    if asked and not (with_config and "full" in asked[-1] and _config_arg(argv)[0]):
        if with_config:
            flags.DEFINE_string("config", None, CONFIG_HELP, flag_values=fv)
        _print_help(argv[0].split()[-1], fv)
        raise HelpShown()
    argv = [a for a in argv if a.split("=")[0] not in HELP_FLAGS]
    config = None
    if with_config:
        config, argv = _define_config(fv, argv)
    try:
        rest = fv(argv)
    except flags.Error as e:
        raise CliError(_unknown_override(config, argv) or str(e)) from e
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # from config_flags
        detail = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise CliError(_unknown_override(config, argv) or "bad config override: " +
                       " ".join(str(detail).split())) from e
    if (len(rest) - 1 < -positional) if positional < 0 else (len(rest) - 1 != positional):
        usage = COMMAND_USAGE.get(argv[0].split()[-1], "").split("\n")[0]
        raise CliError(f"expected {positional} positional argument(s), got {rest[1:]}"
                       + (f" (usage: {usage})" if usage else ""))
    if asked:  # --helpfull with a config: the flags, then every key of the resolved config
        from genjax.config import describe

        _print_help(argv[0].split()[-1], fv)
        print("\nconfig keys (--config.KEY=VALUE):\n" + describe(fv["config"].value))
        raise HelpShown()
    return fv, rest[1:]


def _print_help(command: str, fv) -> None:
    print(f"usage: {COMMAND_USAGE.get(command, command)}\n\nflags:")
    for flag in sorted((f for fl in fv.flags_by_module_dict().values() for f in fl),
                       key=lambda f: f.name):
        if flag.name.startswith("config."):
            continue
        name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
        default = "" if flag.default in (None, "") or flag.name == "config" else \
            f" (default: {flag.default})"
        print(f"  {name:<22} {flag.help}{default}")


def _config_arg(argv: list[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """(the --config FILE, probe files from --config.hooks.probes.files.NAME[=]PATH, argv
    without both). Probe files are user-named keys, so they are set before the config is
    locked against unknown keys."""
    path, files, rest, i = None, {}, [], 0
    while i < len(argv):
        arg = argv[i]
        plain = re.fullmatch(r"--?config(?:=(.*))?", arg, re.S)
        probe = re.fullmatch(r"--?config\.hooks\.probes\.files\.([^=]+)(?:=(.*))?", arg, re.S)
        if arg == "--":
            rest += argv[i:]
            break
        if i and (plain or probe):
            value = plain.group(1) if plain else probe.group(2)
            if value is None:
                if i + 1 == len(argv):
                    raise CliError(f"flag {arg} needs a value")
                i, value = i + 1, argv[i + 1]
            if plain:
                path = value
            else:
                files[probe.group(1)] = value
        else:
            rest.append(arg)
        i += 1
    return path, files, rest


def _define_config(fv, argv: list[str]):
    """Loads --config FILE (one clear line for a missing or broken file), adds the probe files
    given on the command line and defines the `config` flag whose overrides absl parses."""
    from ml_collections import config_flags

    from genjax.config import load

    path, files, argv = _config_arg(argv)
    if path is None:
        raise CliError("--config is required")
    config = load(path, check=False)
    with config.unlocked():
        for name, value in files.items():
            config.hooks.probes.files[name] = value
    unknown = _unknown_override(config, argv)
    if unknown:
        raise CliError(unknown)
    try:  # the overrides' types are looked up here
        config_flags.DEFINE_config_dict("config", config, CONFIG_HELP, flag_values=fv,
                                        lock_config=True, sys_argv=argv)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        detail = e.args[0] if isinstance(e, KeyError | AttributeError) and e.args else e
        raise CliError("bad config override: " + " ".join(str(detail).split())) from e
    return config, argv


def _unknown_override(config, argv: list[str]) -> str | None:
    """The schema's message for the first --config.KEY override that names no key."""
    from genjax.config import ConfigDict

    for arg in argv[1:] if config is not None else ():
        m = re.match(r"--?(?:no)?config\.([^=]+)", arg)
        node, path = config, ""
        for part in m.group(1).split(".") if m else ():
            if not isinstance(node, ConfigDict):
                return f"config key '{path}' is not a section (in {arg.split('=')[0]})"
            path = f"{path}.{part}" if path else part
            if part not in node:
                known = ", ".join(sorted(node.keys()))
                return f"unknown config key '{path}' (known here: {known})"
            node = node[part]
    return None


def _load_config(fv):
    from genjax.config import validate

    return validate(fv["config"].value)


def _setup_devices(fv) -> None:
    """Before the first jax call: virtual CPU devices and multi-host initialization."""
    if fv["cpu_devices"].value:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count="
                                   f"{fv['cpu_devices'].value}").strip()
    from genjax.cluster import initialize

    cluster = initialize(fv["distributed"].value, fv["coordinator"].value,
                         fv["num_processes"].value, fv["process_id"].value)
    if cluster is not None:
        import jax

        if jax.process_index() == 0:
            print(f"distributed: {cluster.detail}: {jax.process_count()} processes, "
                  f"{jax.device_count()} devices", file=sys.stderr, flush=True)


def cmd_train(argv: list[str]) -> int:
    def define(flags, fv):
        flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics)",
                            flag_values=fv)
        flags.DEFINE_integer("cpu_devices", 0, "virtual CPU devices (testing meshes)",
                             flag_values=fv)
        flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                          "multi-host initialization: auto joins a detected job (--coordinator, "
                          "SLURM, Open MPI, TPU VM; genjax.cluster), on requires one",
                          flag_values=fv)
        flags.DEFINE_string("coordinator", "", "host:port of process 0", flag_values=fv)
        flags.DEFINE_integer("num_processes", 1, "processes in the job", flag_values=fv)
        flags.DEFINE_integer("process_id", 0, "this process's index", flag_values=fv)
        flags.DEFINE_integer("stop_after", 0, "stop after this many steps (0: run to the end)",
                             flag_values=fv)
        flags.DEFINE_bool("heap_malloc", True, "CPU backend: keep XLA's large per-step "
                          "buffers in glibc's heap instead of mapping them afresh every step "
                          "(genjax.perf.keep_large_allocations_in_heap)", flag_values=fv)

    fv, _ = _flags(argv, define, with_config=True)
    config = _load_config(fv)
    if not fv["workdir"].value:
        raise CliError("--workdir is required")
    _setup_devices(fv)
    import jax

    from genjax.perf import keep_large_allocations_in_heap
    from genjax.train.run import run_training
    from genjax.train.trainer import removed_on_failed_start

    if fv["heap_malloc"].value and jax.default_backend() == "cpu":
        keep_large_allocations_in_heap()

    with removed_on_failed_start(fv["workdir"].value):
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
        flags.DEFINE_float("beta", 4.0, "change-point penalty in log(n) innovation variances",
                           flag_values=fv)
        flags.DEFINE_integer("smooth", 1, "moving-average window before change points",
                             flag_values=fv)
        flags.DEFINE_integer("min_regime_steps", 20, "rows a regime must last to count",
                             flag_values=fv)
        flags.DEFINE_float("margin_floor", 0.02, "|mean margin| a decided regime needs",
                           flag_values=fv)
        flags.DEFINE_float("level", 0.95, "confidence level of the regime intervals",
                           flag_values=fv)
        flags.DEFINE_bool("explain", False, "what caused each hop: probes along the line "
                          "between the checkpoints around it, and reruns from the first with "
                          "other data orders", flag_values=fv)
        flags.DEFINE_integer("explain_steps", 200, "steps of each --explain rerun",
                             flag_values=fv)
        flags.DEFINE_list("explain_orders", ["1"], "data orders of the --explain reruns "
                          "(0: the run's own, a control)", flag_values=fv)

    fv, rest = _flags(argv, define, positional=1)
    from genjax.analysis.report import analyze_workdir

    # only the flags given override the run's stored config.analysis settings
    given = {k: fv[flag].value for flag, k in (("beta", "beta"), ("smooth", "smooth_window"),
                                               ("min_regime_steps", "min_regime_steps"),
                                               ("margin_floor", "margin_floor"),
                                               ("level", "level"))
             if fv[flag].present}
    explain = None
    if fv["explain"].value:
        try:
            orders = [int(k) for k in fv["explain_orders"].value]
        except ValueError as e:
            raise CliError(f"--explain_orders must be integers: {e}") from e
        if fv["explain_steps"].value < 1 or any(k < 0 for k in orders):
            raise CliError("--explain_steps must be >= 1 and --explain_orders >= 0")
        explain = {"steps": fv["explain_steps"].value, "orders": orders}
    out = analyze_workdir(rest[0], overrides=given, explain=explain)
    print(f"analysis written to {out}")
    return 0


def cmd_compare(argv: list[str]) -> int:
    def define(flags, fv):
        flags.DEFINE_string("out", "compare", "directory for compare.html, compare.json, PNGs",
                            flag_values=fv)

    fv, rest = _flags(argv, define, positional=-1)
    from genjax.analysis.compare import compare

    out = fv["out"].value
    result = compare(rest, out)
    print(f"{len(result['runs'])} runs, {len(result['hops'])} hops compared; written to {out}")
    return 0


def cmd_sweep(argv: list[str]) -> int:
    def define(flags, fv):
        flags.DEFINE_string("config", None, "config file (configs/*.py)", flag_values=fv)
        flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,... (repeat for a product; one "
                                  "value: a fixed override)", flag_values=fv)
        flags.DEFINE_string("workdir", None, "sweep directory: one run workdir per point",
                            flag_values=fv)
        flags.DEFINE_integer("parallel", 1, "points run at once on this machine",
                             flag_values=fv)

    fv, _ = _flags(argv, define)
    if not fv["config"].value or not fv["workdir"].value:
        raise CliError("--config and --workdir are required")
    from genjax.analysis.compare import compare
    from genjax.train.sweep import run_sweep

    records = run_sweep(fv["config"].value, fv["grid"].value, fv["workdir"].value,
                        fv["parallel"].value)
    done = [r["workdir"] for r in records if r["status"] == "done"]
    failed = [r["name"] for r in records if r["status"] != "done"]
    if done:
        out = os.path.join(fv["workdir"].value, "compare")
        compare(done, out)
        print(f"sweep: {len(done)} of {len(records)} points done; comparison in {out}")
    if failed:
        print(f"genjax sweep: {len(failed)} point(s) failed: {', '.join(failed)} (their "
              f"train.log says why)", file=sys.stderr)
        return 1
    return 0


def cmd_compile(argv: list[str]) -> int:
    def define(flags, fv):
        flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:4x4, v5p:2x2x1, v5e-256",
                            flag_values=fv)
        flags.DEFINE_integer("num_slices", 1, "number of slices (multi-slice)", flag_values=fv)
        flags.DEFINE_string("out", "", "write the report as JSON here", flag_values=fv)

    fv, _ = _flags(argv, define, with_config=True)
    config = _load_config(fv)
    if not fv["topology"].value:
        raise CliError("--topology is required")
    from genjax.tpu.compile import compile_command

    return compile_command(config, fv["topology"].value, fv["num_slices"].value,
                           fv["out"].value)


def cmd_config(argv: list[str]) -> int:
    """`genjax config show FILE [--config.KEY=VALUE ...]`: the resolved config, described."""
    args = argv[1:]
    if args and args[0] == "show":
        args = args[1:]
    elif not any(a.split("=")[0] in HELP_FLAGS for a in args):
        raise CliError("usage: genjax config show FILE [--config.KEY=VALUE ...]")
    if args and not args[0].startswith("-"):  # the file as a positional argument
        args = ["--config", args[0], *args[1:]]
    fv, _ = _flags([argv[0], *args], lambda flags, fv: None, with_config=True)
    from genjax.config import describe

    print(describe(_load_config(fv)))
    return 0


def cmd_data(argv: list[str]) -> int:
    def define(flags, fv):
        flags.DEFINE_string("out", None, "output directory (local or gs://)", flag_values=fv)
        flags.DEFINE_enum("tokenizer", "huggingface", ["huggingface", "sentencepiece", "byte"],
                          "tokenizer kind", flag_values=fv)
        flags.DEFINE_string("tokenizer_file", "", "tokenizer.json or sentencepiece .model",
                            flag_values=fv)
        flags.DEFINE_float("heldout_fraction", 0.01, "share of documents held out (by a hash "
                           "of their text)", flag_values=fv)
        flags.DEFINE_string("text_field", "text", "text field of JSONL rows and parquet "
                            "columns", flag_values=fv)
        flags.DEFINE_integer("shard_tokens", 2**27, "tokens per shard file", flag_values=fv)
        flags.DEFINE_bool("progress", True, "a progress line on stderr", flag_values=fv)

    args = argv[1:]
    if not args or args[0] != "prepare":
        if args and args[0] in HELP_FLAGS:
            print(f"usage: {COMMAND_USAGE['data']}")
            return 0
        raise CliError(f"usage: {COMMAND_USAGE['data'].splitlines()[0]}")
    fv, rest = _flags([argv[0], *args[1:]], define, positional=-1)
    if not rest:
        raise CliError("genjax data prepare needs at least one input file or glob")
    if not fv["out"].value:
        raise CliError("--out is required")
    if not 0 < fv["heldout_fraction"].value < 1:
        raise CliError(f"--heldout_fraction must be in (0, 1), got {fv['heldout_fraction'].value}")
    if fv["shard_tokens"].value < 1:
        raise CliError("--shard_tokens must be at least 1")
    from genjax.data.prepare import prepare
    from genjax.data.sources import DataError
    from genjax.data.tokenizers import load_tokenizer

    try:
        tokenizer = load_tokenizer(fv["tokenizer"].value, fv["tokenizer_file"].value)
    except ValueError as e:
        raise DataError(str(e)) from None
    manifest = prepare(rest, fv["out"].value, tokenizer,
                       heldout_fraction=fv["heldout_fraction"].value,
                       text_field=fv["text_field"].value, shard_tokens=fv["shard_tokens"].value,
                       progress=fv["progress"].value)
    totals = manifest["totals"]
    print(f"prepared {fv['out'].value}: {len(manifest['sources'])} files, "
          f"{totals['documents']:,} documents, {totals['tokens']:,} training and "
          f"{totals['heldout_tokens']:,} held-out tokens")
    return 0


COMMANDS = {"train": cmd_train, "metrics": cmd_metrics, "analyze": cmd_analyze,
            "compare": cmd_compare, "sweep": cmd_sweep, "compile": cmd_compile,
            "config": cmd_config, "data": cmd_data}


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

    verbose = any(re.fullmatch(r"--?verbose(=(true|1|yes))?", a, re.I) for a in argv[2:])
    try:
        return COMMANDS[command]([f"genjax {command}"] + argv[2:])
    except HelpShown:
        return 0
    except (CliError, *user_errors()) as e:  # expected conditions: one line, no traceback
        if verbose:
            traceback.print_exc()
        print(f"genjax {command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
