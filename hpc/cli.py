"""The ``xreduce`` command line: parse arguments, load the config, call :mod:`hpc.commands`.

Exit codes: 0 all done; 1 some chunks failed or another xreduce error (a file that cannot be
written included); 2 bad config or usage; 130 interrupted; 143 terminated (SIGTERM). Heavy modules
(Hydra, numpy, the commands) are imported only when a subcommand runs, so that ``xreduce --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from .about import REQUIRABLE, installed_version

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

_OVERRIDES_HELP = ("Hydra overrides: campaign=my_exp reduction=azint2d reduction.npt=2000 backend.workers=8 "
                   "(see docs/config.md)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xreduce",
        description="Reduce whole X-ray scattering experiments (BLISS HDF5 raw data → NeXus), from a "
                    "workstation to Slurm clusters. Exit codes: 0 all done, 1 some chunks failed, "
                    "2 bad config or usage.")
    parser.add_argument("--version", action="version", version=f"xreduce {installed_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv: debug); show tracebacks of errors")
    # -v after the subcommand too; SUPPRESS keeps a -v given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    configured = argparse.ArgumentParser(add_help=False, parents=[common])
    configured.add_argument("--config-dir", metavar="DIR", type=Path,
                            help="a folder of your own configs (campaign/my_exp.yaml ...), searched first")
    configured.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES_HELP)

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("plan", parents=[configured], help="discover scans, cut them into chunks, print a summary",
                   description="Discover the scans of the campaign and cut them into chunks; print a summary.")
    sub.add_parser("run", parents=[configured], help="run all pending chunks here, then merge",
                   description="Run all pending chunks with the chosen backend, then merge.")
    status = sub.add_parser("status", parents=[configured], help="done / failed / pending / running chunks",
                            description="Chunk states with reasons, from a config (overrides) or from an "
                                        "output folder (xreduce status DIR).")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    submit = sub.add_parser("submit", parents=[configured], help="backend=slurm: submit a job array + merge job",
                            description="Submit the chunks still to do as Slurm job arrays and a dependent "
                                        "merge job; print the job ids and return.")
    submit.add_argument("--force", action="store_true",
                        help="submit even if jobs of this campaign are still queued or running")
    sub.add_parser("cancel", parents=[configured], help="scancel this campaign's queued or running jobs",
                   description="Cancel the Slurm jobs of this campaign that are queued or running.")
    bench = sub.add_parser("bench", parents=[configured], help="time the reduction's stages on the first scan",
                           description="With the same overrides as `xreduce run`: time reading, the kernel alone "
                                       "and the whole step on the campaign's first scan, and print the rate the "
                                       "stages allow together (the bound) and the fraction reached. Writes "
                                       "nothing to the campaign's output.")
    bench.add_argument("--frames", metavar="N", type=int, default=128,
                       help="frames of the first scan to use (default 128, or the whole scan if shorter)")
    sub.add_parser("merge", parents=[configured], help="(re)build the master files from finished chunks",
                   description="(Re)build the master NeXus files from the finished chunks.")
    derived = argparse.ArgumentParser(add_help=False, parents=[common])
    derived.add_argument("master", metavar="MASTER", type=Path, help="an NXazint master file written by xreduce")
    derived.add_argument("--entries", metavar="NAMES", help="comma-separated entry names (default: every entry)")
    derived.add_argument("-o", "--output", metavar="PATH", type=Path, help="the new master file (default: beside "
                         "MASTER, named after it)")
    derived.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    rebin = sub.add_parser("rebin", parents=[derived], help="re-bin a master's results to a coarser grid",
                           description="Merge adjacent bins of a master's entries from their stored accumulators "
                                       "(never the raw data) into a new master: I = sum(signal)/sum(normalization), "
                                       "sigma = sqrt(sum(variance))/sum(normalization). See docs/output.md.")
    rebin.add_argument("--factor", metavar="K", type=int, default=1, help="radial bins merged (must divide them)")
    rebin.add_argument("--azimuthal-factor", metavar="K", type=int, default=1,
                       help="azimuthal bins merged (2-D entries; must divide them)")
    summed = sub.add_parser("sum", parents=[derived], help="sum or average frames of a master's entries",
                            description="Sum (or average) frames of a master's entries from their stored "
                                        "accumulators (never the raw data) into a new master, sigma propagated; "
                                        "one entry per source entry, or one for all with --combine. See "
                                        "docs/output.md.")
    summed.add_argument("--frames", metavar="A:B", help="frames A to B-1 of each entry (default: all)")
    summed.add_argument("--mean", action="store_true", help="the mean of the frames instead of their sum")
    summed.add_argument("--combine", metavar="NAME", help="sum all selected entries together into one entry NAME")
    demo = sub.add_parser("demo", parents=[common], help="reduce a small synthetic experiment locally",
                          description="Generate a small synthetic experiment in the BLISS layout, reduce it "
                                      "locally and print where the results and a preview are.")
    demo.add_argument("--out", metavar="DIR", type=Path, help="where to write it (default: a new folder)")
    selftest = sub.add_parser("selftest", parents=[common], help="check this installation (or image): "
                              "imports, engines, a known-answer integration",
                              description="Check that this installation (or Apptainer image) works here: "
                                          "versions, MPI library, OpenCL devices, a bitshuffle-LZ4 HDF5 round "
                                          "trip and a flat image integrated on each engine against the known "
                                          "answer. Exit 0 when nothing failed, 1 otherwise; a missing optional "
                                          "part (no OpenCL device, no MPI) is 'unavailable', not a failure, "
                                          "unless --require names it.")
    selftest.add_argument("--require", action="append", default=[], choices=REQUIRABLE, metavar="PART",
                          help=f"a part that must work here: {', '.join(REQUIRABLE)} (repeatable)")
    selftest.add_argument("--device", default="auto", metavar="DEVICE",
                          help="OpenCL device of the opencl check: auto, cpu, gpu or P:D (default auto)")
    selftest.add_argument("--json", action="store_true", help="machine-readable output")
    worker = sub.add_parser("worker", parents=[common], help="(internal) run one task group of a plan",
                            description="Run the chunks of one task group of a plan (what a Slurm array "
                                        "task or an MPI rank runs).")
    worker.add_argument("--plan", metavar="PATH", type=Path, required=True,
                        help="the plan: a snapshot plans/<hash12>.json (checked against its name) or a plan.json")
    what = worker.add_mutually_exclusive_group(required=True)
    what.add_argument("--group", metavar="N", type=int, help="task group index")
    what.add_argument("--merge", action="store_true", help="build the master files (the merge job)")
    what.add_argument("--mpi", action="store_true", help="run the plan on this job's MPI ranks (mode=mpi)")
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, accepting overrides anywhere among the options (``plan --config-dir D campaign=x``)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _status_target(args: argparse.Namespace) -> Any:
    """``status DIR`` names an output folder; anything else is overrides."""
    from .errors import ConfigError

    overrides = args.overrides
    if len(overrides) == 1 and "=" not in overrides[0] and not overrides[0].startswith(("~", "+")):
        folder = Path(overrides[0]).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"status {overrides[0]}: no such output folder (give a folder, or overrides "
                              f"such as campaign=my_exp)")
        return folder.absolute()
    return _config(args)


def _config(args: argparse.Namespace) -> Any:
    from .config import load_config

    return load_config(args.overrides, args.config_dir)


def _dispatch(args: argparse.Namespace) -> int:
    """Validate the config first (exit 2 before anything runs), then run the command."""
    if args.command in ("plan", "run", "merge", "cancel"):
        cfg = _config(args)
        return getattr(_commands(), args.command)(cfg)
    if args.command == "submit":
        return _commands().submit(_config(args), force=args.force)
    if args.command == "bench":
        from .bench import bench

        return bench(_config(args), frames=args.frames)
    if args.command == "status":
        target = _status_target(args)
        return _commands().status(target, as_json=args.json)
    if args.command == "demo":
        return _commands().demo(args.out)
    if args.command in ("rebin", "sum"):
        return _derived(args)
    if args.command == "selftest":
        return _selftest(args)
    if args.command == "worker":
        return _commands().worker(args.plan, args.group, merge_only=args.merge, mpi=args.mpi)
    raise AssertionError(f"unhandled command {args.command}")


def _derived(args: argparse.Namespace) -> int:
    """``rebin`` / ``sum``: work on a master file, no config."""
    from . import derived

    if args.command == "rebin":
        return derived.rebin(args.master, factor=args.factor, azimuthal_factor=args.azimuthal_factor,
                             entries=args.entries, output=args.output, overwrite=args.overwrite)
    return derived.sum_frames(args.master, entries=args.entries, frames=args.frames, mean=args.mean,
                              combine=args.combine, output=args.output, overwrite=args.overwrite)


def _selftest(args: argparse.Namespace) -> int:
    """Apart from hpc.commands (Hydra, backends): it must report even on a half-broken install."""
    from .selftest import format_report, report_json, run_selftest

    report = run_selftest(require=args.require, device=args.device)
    print(report_json(report) if args.json else format_report(report), flush=True)
    return EXIT_OK if report.ok else EXIT_FAILED


def _commands() -> Any:
    return importlib.import_module("hpc.commands")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xreduce`` console script; returns the process exit code."""
    try:
        args = _parse(argv)
    except SystemExit as stop:          # --help, --version, usage errors (argparse exits with 2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    _setup_logging(args.verbose)
    from reduction.errors import XReduceError

    from .errors import ConfigError

    previous = _on_sigterm()
    try:
        return int(_dispatch(args))
    except ConfigError as err:
        return _report(err, EXIT_USAGE, args.verbose)
    except XReduceError as err:
        return _report(err, EXIT_FAILED, args.verbose)
    except OSError as err:  # a file xreduce could not write (disk full, quota, read-only): one line, its name
        return _report(err, EXIT_FAILED, args.verbose)
    except KeyboardInterrupt:
        print("xreduce: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print("xreduce: terminated (SIGTERM); finished chunks are kept, `xreduce run` again goes on",
              file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """SIGTERM (kill, Slurm's scancel, a container stopping): unwind like Ctrl-C, so that worker
    processes are ended and temporary files removed on the way out."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated


def _on_sigterm() -> Any:
    """Handle SIGTERM while a command runs (main thread only); the previous handler, to put back."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _terminated)


def _report(err: Exception, code: int, verbose: int) -> int:
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    print(f"xreduce: error: {err}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
