"""The commands behind ``xreduce plan / run / status / merge / demo / worker``.

Each takes a validated config (or a plan) and returns the process exit code: 0 all done,
1 some chunks failed (a summary is printed), 2 bad config or usage (raised as ConfigError).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reduction.errors import XReduceError
from reduction.step import MasterEntry, Step, get_kind

from .backends import get_backend, submitting, waiting
from .errors import BackendError, ConfigError
from .plan import Plan, make_plan, read_plan, write_plan
from .state import DONE, FAILED, PENDING, ChunkPaths, ChunkState, chunk_states
from .worker import STEPS, Outcome, process_chunk

__all__ = ["plan", "run", "submit", "cancel", "status", "merge", "demo", "worker", "merge_plan"]

log = logging.getLogger(__name__)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table (no dependency, copy-pastes into a logbook)."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- planning -----------------------------------------------------------------------------------
def _make_plan(cfg: Any) -> Plan:
    from .config import config_hash, to_json

    config = json.loads(to_json(cfg))
    new = make_plan(cfg, config_hash(cfg), config)
    write_plan(new, Path(cfg.campaign.output))
    return new


def _plan_summary(plan: Plan, states: list[ChunkState]) -> str:
    per_dataset: dict[str, dict[str, Any]] = defaultdict(lambda: {"scans": set(), "frames": 0, "chunks": 0,
                                                                 "done": 0, "failed": 0, "active": 0})
    for st in states:
        row = per_dataset[st.chunk.dataset]
        row["scans"].add(st.chunk.scan)
        row["frames"] += st.chunk.nframes
        row["chunks"] += 1
        row["done"] += st.state == DONE
        row["failed"] += st.state == FAILED
        row["active"] += st.state in ("queued", "running")
    unfinished = Counter(p["dataset"] for p in plan.pending_scans)
    rows = [[Path(name).name, len(r["scans"]), r["frames"], r["chunks"], r["done"], r["failed"], r["active"],
             r["chunks"] - r["done"] - r["failed"] - r["active"], unfinished.get(name, 0)]
            for name, r in sorted(per_dataset.items())]
    for name in sorted(set(unfinished) - set(per_dataset)):
        rows.append([Path(name).name, 0, 0, 0, 0, 0, 0, 0, unfinished[name]])
    total = [sum(r[i] for r in rows) for i in range(1, 9)]
    rows.append(["total", *total])
    return _table(rows, ["dataset", "scans", "frames", "chunks", "done", "failed", "queued/running", "todo",
                         "unfinished scans"])


def plan(cfg: Any) -> int:
    """Discover and partition; print a summary table."""
    new = _make_plan(cfg)
    _say(_plan_summary(new, chunk_states(new, Path(new.output), quick=True)))
    _say(f"\nplan: {Path(new.output) / 'plan.json'} ({len(new.chunks)} chunks, config {new.config_hash[:12]})")
    for pending in new.pending_scans:
        _say(f"unfinished: {pending['dataset']} scan {pending['scan']} ({pending['reason']}): "
             "picked up by the next run")
    return 0


# -- running --------------------------------------------------------------------------------------
def _open_step(cfg: Any) -> Step:
    """The reduction kind's step, built here so that unusable inputs (a bad PONI, a mask of the wrong
    shape) stop the command before anything runs: exit 2, naming the file."""
    try:
        return get_kind(cfg.reduction.kind).open(cfg.reduction)
    except XReduceError as exc:
        raise ConfigError(f"reduction config cannot be used: {exc}") from exc


def _failures(states: list[ChunkState]) -> str:
    rows = [[st.chunk.id, Path(st.chunk.dataset).name, st.chunk.scan, f"{st.chunk.start}-{st.chunk.stop}",
             st.reason[:120]] for st in states if st.state == FAILED]
    return _table(rows, ["chunk", "dataset", "scan", "frames", "reason"])


def run(cfg: Any, client: Any = None) -> int:
    """Run every pending or failed chunk with the configured backend (or on a given Dask
    ``client``), then merge."""
    step = _open_step(cfg)  # a bad PONI/mask fails here, before anything runs
    backend = get_backend(cfg.backend, client=client)
    if not backend.waits:
        raise ConfigError(f"backend={backend.name} submits and returns: use `xreduce submit`, not `xreduce run` "
                          f"(backends that run here and wait: {', '.join(waiting())})")
    backend.require()
    if not backend.is_root:  # an SPMD rank other than the root: serve chunks, nothing else
        backend.serve()
        return 0
    new = _make_plan(cfg)
    STEPS.put(new, step)  # chunks reduced in this process use it: built once
    output = Path(new.output)
    states = chunk_states(new, output)
    todo = [i for i, st in enumerate(states) if st.state != DONE]
    skipped = len(states) - len(todo)
    _say(f"{len(new.chunks)} chunks: {skipped} already done, {len(todo)} to run with backend "
         f"{cfg.backend.name} → {output}")
    if not todo and backend.spmd:  # the root opens and closes its executor: the other ranks stop serving
        backend.run(new, [], lambda outcome: None)
    if todo:
        # the merge's imports (a plotting library) load while the chunks run, not after them
        warm_up = threading.Thread(target=new.kind.warm_up, name="xreduce-warm-up", daemon=True)
        warm_up.start()
        total = sum(new.chunks[i].nframes for i in todo)
        start = time.perf_counter()
        with tqdm(total=total, unit="frame", desc="reducing", disable=None, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            engines: set[str] = set()
            stages: Counter[str] = Counter()

            def on_outcome(outcome: Outcome) -> None:
                index = index_of[outcome.chunk_id]
                bar.update(new.chunks[index].nframes)
                states[index] = ChunkState(new.chunks[index], DONE if outcome.ok else FAILED, outcome.message)
                stages.update(outcome.stages)
                if outcome.engine:
                    engines.add(outcome.engine)
                if not outcome.ok:
                    bar.write(f"chunk {outcome.chunk_id} failed: {outcome.message}")

            index_of = {new.chunks[i].id: i for i in todo}
            backend.run(new, todo, on_outcome)
        seconds = time.perf_counter() - start
        warm_up.join()
        used = f"; engine {', '.join(sorted(engines))}" if engines else ""
        _say(f"reduced {total} frames in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} frames/s{used})")
    merge_start = time.perf_counter()
    code = merge_plan(new, states)  # the states as the outcomes left them: no chunk file opened again
    if todo and stages:
        _say(_where_the_time_went(stages, time.perf_counter() - merge_start))
    failed = [st for st in states if st.state != DONE]
    for pending in new.pending_scans:
        _say(f"unfinished: {pending['dataset']} scan {pending['scan']}: picked up by the next run")
    if failed:
        _say(f"\n{len(failed)} of {len(states)} chunks failed:")
        _say(_failures(states))
        _say(f"error records: {output / 'chunks'}/<chunk>.error.json; `xreduce run` again retries them")
        return 1
    return code


def _where_the_time_went(stages: Counter[str], merge: float) -> str:
    """One line: each stage's share of the time the workers and the merge spent (stage seconds are
    summed over chunks; reading overlaps the kernel, so "not hidden" is the reading it did not hide)."""
    work = {"read+decompress": stages["read"], "kernel": stages["reduce"], "write": stages["write"], "merge": merge}
    total = sum(work.values()) or 1.0
    shares = ", ".join(f"{name} {100 * value / total:.0f} %" for name, value in work.items())
    hidden = f" (reading not hidden by the kernel: {stages['wait']:.1f} s)" if stages["read"] else ""
    return f"time by stage: {shares} of {total:.1f} s{hidden}"


# -- submitting ---------------------------------------------------------------------------------
def submit(cfg: Any, force: bool = False) -> int:
    """A submitting backend (slurm): submit the chunks still to do, e.g. as job arrays plus a merge job."""
    backend = get_backend(cfg.backend)
    if not backend.submits:
        raise ConfigError(f"xreduce submit needs a backend that submits and returns (backend="
                          f"{' or '.join(submitting())}); backend.name is {cfg.backend.name!r}: "
                          "`xreduce run` runs it here")
    _open_step(cfg)
    backend.require()
    output = Path(cfg.campaign.output)
    running = backend.active_jobs(output)
    if running and not force:
        raise BackendError(f"campaign {cfg.campaign.name} still has jobs queued or running (backend="
                           f"{backend.name}): {', '.join(running)}; wait for them (`xreduce status`), cancel "
                           "them (`xreduce cancel`), or submit anyway with --force")
    new = _make_plan(cfg)
    states = chunk_states(new, output)
    todo = [i for i, st in enumerate(states) if st.state != DONE]
    _say(f"{len(new.chunks)} chunks: {len(states) - len(todo)} already done, {len(todo)} to submit")
    if not todo:
        return merge_plan(new, states)
    _say(backend.submit(new, todo).summary())
    _say(f"watch with `xreduce status {output}`")
    return 0


def cancel(cfg: Any) -> int:
    """Cancel the campaign's queued or running jobs, whichever submitting backend left them."""
    output = Path(cfg.campaign.output)
    jobs = [job for backend in submitting().values() for job in backend.cancel(output)]
    _say(f"cancelled {', '.join(jobs)}" if jobs else "nothing queued or running for this campaign")
    return 0


def _with_schedulers(output: Path, states: list[ChunkState]) -> list[ChunkState]:
    """What the schedulers know (queued, running, died silently) over what the files say."""
    for backend in submitting().values():
        states = backend.overlay(output, states)
    return states


# -- status ---------------------------------------------------------------------------------------
def status(target: Any, as_json: bool = False) -> int:
    """Done / failed / pending chunks with reasons, from the files of an output folder or a config."""
    output = Path(target) if isinstance(target, (str, Path)) else Path(target.campaign.output)
    current = read_plan(output)
    states = _with_schedulers(output, chunk_states(current, output, quick=True))
    counts = Counter(st.state for st in states)
    if as_json:
        print(json.dumps({
            "campaign": current.campaign, "output": str(output), "config_hash": current.config_hash,
            "counts": {k: counts.get(k, 0) for k in (DONE, FAILED, PENDING, "queued", "running")},
            "frames": {"total": current.nframes,
                       "done": sum(st.chunk.nframes for st in states if st.state == DONE)},
            "unfinished_scans": current.pending_scans,
            "chunks": [{"id": st.chunk.id, "dataset": st.chunk.dataset, "scan": st.chunk.scan,
                        "frames": [st.chunk.start, st.chunk.stop], "state": st.state, "reason": st.reason}
                       for st in states]}, indent=1))
    else:
        _say(f"campaign {current.campaign}: {output}")
        _say(_plan_summary(current, states))
        if counts.get(FAILED):
            _say("\nfailed chunks:")
            _say(_failures(states))
        for pending in current.pending_scans:
            _say(f"unfinished: {pending['dataset']} scan {pending['scan']} ({pending['reason']})")
    return 1 if counts.get(FAILED) else 0


# -- merging --------------------------------------------------------------------------------------
def _entry_name(dataset: str, scan: str) -> str:
    return f"{Path(dataset).stem}_{scan}"


def _beamline(experiment: str) -> str:
    """The beamline of a "proposal/beamline/session" experiment (NXinstrument/name)."""
    parts = experiment.strip("/").split("/")
    return parts[1] if len(parts) == 3 else "unknown"


def _master_name(experiment: str) -> str:
    return experiment.strip("/").replace("/", "_") + ".nxs"


def merge_plan(current: Plan, states: list[ChunkState] | None = None) -> int:
    """Build one master file per experiment from the chunk files (missing chunks listed, not
    zero-filled), by the plan's reduction kind; ``states``: the chunk states when already known."""
    output = Path(current.output)
    mode = current.config.get("merge", {}).get("mode", "vds")
    kind = current.kind
    # quick states are enough: the kind's merge checks every chunk file it merges, and reports the others
    done = {st.chunk.id for st in (states if states is not None else chunk_states(current, output, quick=True))
            if st.state == DONE}
    scans: dict[str, dict[tuple[str, str], list]] = defaultdict(lambda: defaultdict(list))
    for chunk in current.chunks:
        scans[chunk.experiment][(chunk.dataset, chunk.scan)].append(chunk)
    missing_total = 0
    for experiment, by_scan in sorted(scans.items()):
        entries = []
        for (dataset, scan), chunks in sorted(by_scan.items()):
            if all(c.problem for c in chunks):
                continue  # nothing to show: the scan itself could not be read; status names it
            chunks = sorted(chunks, key=lambda c: c.start)
            parts = [(c.start, c.stop, ChunkPaths(output, c.id).result if c.id in done else None) for c in chunks]
            missing_total += sum(part[2] is None for part in parts)
            entries.append(MasterEntry(name=_entry_name(dataset, scan), dataset=dataset, scan=scan,
                                       nframes=chunks[0].nframes_scan, chunks=parts,
                                       chunk_ids=[c.id for c in chunks], beamline=_beamline(experiment)))
        if not entries:
            continue
        master = output / _master_name(experiment)
        report = kind.merge(master, entries, mode=mode, config_json=current.config_json)
        if not report.complete:
            missing_total += 1  # also a chunk file done but refused by the merge's own checks
            _say(report.summary())
        preview = master.with_suffix(".png")
        kind.preview(master, preview)
        _say(f"master: {master}\npreview: {preview}")
    return 1 if missing_total else 0


def merge(cfg: Any) -> int:
    """(Re)build the master files of a campaign from its finished chunks."""
    return merge_plan(read_plan(Path(cfg.campaign.output)))


# -- worker ---------------------------------------------------------------------------------------
def worker(plan_path: Path, group: int | None, merge_only: bool = False, mpi: bool = False) -> int:
    """Process task group ``group`` of a plan (what a Slurm array task runs); with ``merge_only``
    build the master files (the dependent merge job); with ``mpi`` run the plan's first group on
    the MPI ranks of this job and merge on rank 0 (backend.mode=mpi)."""
    current = read_plan(plan_path)
    if merge_only:
        return merge_plan(current)
    if mpi:
        from .backends.mpi import MPIBackend

        backend = MPIBackend(None)
        if not backend.is_root:
            backend.serve()
            return 0
        outcomes: list[Outcome] = []
        backend.run(current, [i for g in current.groups for i in g], outcomes.append)
        code = merge_plan(current)
        return 1 if any(not o.ok for o in outcomes) else code
    if group is None:
        raise ConfigError("xreduce worker needs --group N (or --merge)")
    if not 0 <= group < len(current.groups):
        raise ConfigError(f"task group {group} does not exist: the plan {plan_path} has {len(current.groups)}")
    outcomes = [process_chunk(current, current.chunks[i], STEPS) for i in current.groups[group]]
    for outcome in outcomes:
        log.info("chunk %s: %s %s", outcome.chunk_id, "ok" if outcome.ok else "FAILED", outcome.message)
    return 0 if all(o.ok for o in outcomes) else 1


# -- demo -----------------------------------------------------------------------------------------
def demo(out: Path | None) -> int:
    """Write a small synthetic BLISS experiment and reduce it locally, printing where results are."""
    from reduction.demo.bliss_writer import write_demo_experiment

    from .config import load_config

    out = Path(out or "xreduce-demo").absolute()
    start = time.perf_counter()
    experiment = write_demo_experiment(out / "data")
    _say(f"synthetic experiment written in {time.perf_counter() - start:.1f} s: {experiment.raw_data}")
    cfg = load_config(["campaign=demo", f"campaign.raw_data={experiment.raw_data}",
                       f"reduction.poni={experiment.poni}", f"reduction.mask={experiment.mask}",
                       f"campaign.output={out / 'processed'}"])
    code = run(cfg)
    _say(f"demo finished in {time.perf_counter() - start:.1f} s; try `xreduce status {out / 'processed'}`")
    return code
