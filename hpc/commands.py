"""The commands behind ``xreduce plan / run / status / merge / demo / worker``.

Each takes a validated config (or a plan) and returns the process exit code: 0 all done,
1 some chunks failed (a summary is printed), 2 bad config or usage (raised as ConfigError).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reduction.errors import XReduceError
from reduction.step import MasterEntry, Step, get_kind, remove_temporaries

from .backends import get_backend, submitting, waiting
from .errors import BackendError, ConfigError
from .lock import CampaignLock, current_holder
from .plan import Chunk, Plan, make_plan, read_plan, write_plan, write_snapshot
from .state import DONE, FAILED, PENDING, ChunkPaths, ChunkState, chunk_states
from .worker import STEPS, Outcome, process_chunk

__all__ = ["plan", "run", "submit", "cancel", "status", "merge", "demo", "worker", "merge_plan"]

log = logging.getLogger(__name__)


def _say(text: str = "") -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `xreduce run | head -1`: the reader is gone, the work and the merge go on
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table (no dependency, copy-pastes into a logbook)."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- planning -----------------------------------------------------------------------------------
def _make_plan(cfg: Any, *, save: bool = True) -> Plan:
    from .config import config_hash, to_json
    from .config_checks import check_inputs, check_output_writable

    check_output_writable(cfg)
    check_inputs(cfg)

    config = json.loads(to_json(cfg))
    new = make_plan(cfg, config_hash(cfg), config)
    if save:
        write_plan(new, Path(cfg.campaign.output))
    return new


def _remove_temporaries(output: Path) -> None:
    """Remove what writers that died (killed, node lost) left half-written in the output folder."""
    for folder in (output, output / "chunks"):
        for path in remove_temporaries(folder):
            log.info("removed %s, left by a process that died", path)


def _jobs_active(output: Path) -> Any:
    """For the campaign lock: which of a submission's jobs the submitting backends see queued or running."""
    def active(jobs: list[str]) -> list[str]:
        return [job for backend in submitting().values() for job in backend.active_jobs(output) if job in jobs]
    return active


def _lock(output: Path, command: str) -> CampaignLock:
    return CampaignLock(output, command, _jobs_active(output))


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
    """Discover and partition; print a summary table. While a campaign runs on the output (its lock is
    held), ``plan.json`` is left as that campaign's: this plan is shown, not saved."""
    output = Path(cfg.campaign.output)
    holder = current_holder(output, _jobs_active(output)) if output.is_dir() else None
    new = _make_plan(cfg, save=holder is None)
    states = chunk_states(new, Path(new.output), quick=True)
    _say(_plan_summary(new, states))
    skipped = [st for st in states if st.chunk.problem]
    if skipped:  # scans planning found unreducible: say why here, not only after a run
        _say(f"\n{len(skipped)} scan(s) cannot be reduced as configured (not run; fix the raw data or the config):")
        _say(_failures(skipped))
    if holder is not None:
        _say(f"\nplan not saved: the campaign in {output} is being run by {holder.describe()}; "
             f"{output / 'plan.json'} stays its plan ({len(new.chunks)} chunks shown, config {new.config_hash[:12]})")
    else:
        _say(f"\nplan: {output / 'plan.json'} ({len(new.chunks)} chunks, config {new.config_hash[:12]})")
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
    def reason(st: ChunkState) -> str:  # the dataset and scan have their columns
        return st.reason.removeprefix(f"{st.chunk.dataset} scan {st.chunk.scan}: ")[:160]

    rows = [[st.chunk.id, Path(st.chunk.dataset).name, st.chunk.scan, f"{st.chunk.start}-{st.chunk.stop}",
             "no" if st.permanent else "yes", reason(st)] for st in states if st.state == FAILED]
    return _table(rows, ["chunk", "dataset", "scan", "frames", "retried", "reason"])


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
    new = _make_plan(cfg, save=False)  # mistakes (an unwritable output, no scan) exit 2 before anything is written
    with _lock(Path(new.output), "run"):  # a second run or submit on this output is refused
        return _run_locked(new, step, backend)


def _run_locked(new: Plan, step: Step, backend: Any) -> int:
    """``run`` once the campaign lock is held: save the plan, reduce the chunks still to do, merge, report."""
    write_plan(new, Path(new.output))
    write_snapshot(new)  # the run's work order: what its workers read, whatever is planned meanwhile
    STEPS.put(new, step)  # chunks reduced in this process use it: built once
    output = Path(new.output)
    _remove_temporaries(output)
    states = chunk_states(new, output)
    todo = _to_run(states)
    skipped = sum(st.state == DONE for st in states)
    _say(f"{len(new.chunks)} chunks: {skipped} already done, {len(todo)} to run with backend "
         f"{backend.name} → {output}" + _failed_for_good(states))
    if not todo and backend.spmd:  # the root opens and closes its executor: the other ranks stop serving
        backend.run(new, [], lambda outcome: None)
    stages: Counter[str] = Counter()
    if todo:
        # the merge's imports (a plotting library) load while the chunks run, not after them
        warm_up = threading.Thread(target=new.kind.warm_up, name="xreduce-warm-up", daemon=True)
        warm_up.start()
        total = sum(new.chunks[i].nframes for i in todo)
        start = time.perf_counter()
        with tqdm(total=total, unit="frame", desc="reducing", disable=None, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            engines: set[str] = set()
            reduced = 0

            def on_outcome(outcome: Outcome) -> None:
                nonlocal reduced
                reduced += outcome.nframes if outcome.ok else 0
                index = index_of[outcome.chunk_id]
                bar.update(new.chunks[index].nframes)
                states[index] = ChunkState(new.chunks[index], DONE if outcome.ok else FAILED, outcome.message,
                                           outcome.permanent)
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
        of = f" of {total}" if reduced != total else ""  # frames of failed chunks are not counted
        _say(f"reduced {reduced}{of} frames in {seconds:.1f} s ({reduced / max(seconds, 1e-9):.1f} frames/s{used})")
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
        _say(f"error records: {output / 'chunks'}/<chunk>.error.json")
        retried = sum(not st.permanent for st in failed)
        if retried:
            _say(f"{retried} failed for a reason that may pass (I/O, a file being written, a dead worker): "
                 "`xreduce run` again retries them")
        if len(failed) > retried:
            _say(f"{len(failed) - retried} failed for good (a layout, a shape or a parameter to change, as the reason "
                 "says): not retried until the raw dataset file or the config changes")
        return 1
    return code


def _to_run(states: list[ChunkState]) -> list[int]:
    """The chunks a run or submit does: neither done nor failed for good (a permanent failure is tried
    again once its raw dataset file or the config changes)."""
    return [i for i, st in enumerate(states) if st.state != DONE and not st.permanent]


def _failed_for_good(states: list[ChunkState]) -> str:
    n = sum(st.permanent for st in states if st.state == FAILED)
    return f" ({n} failed for good, not retried: see below)" if n else ""


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
    new = _make_plan(cfg, save=False)  # mistakes exit 2 before anything is written
    lock = _lock(output, "submit")
    lock.acquire(over_jobs=force)  # refused while a run, or (without --force) this campaign's jobs, go on
    try:
        write_plan(new, output)
        _remove_temporaries(output)
        states = chunk_states(new, output)
        todo = _to_run(states)
        _say(f"{len(new.chunks)} chunks: {sum(st.state == DONE for st in states)} already done, {len(todo)} to "
             f"submit" + _failed_for_good(states))
        if not todo:
            lock.release()
            return merge_plan(new, states)
        submitted = backend.submit(new, todo)
    except BaseException:
        lock.release()
        raise
    lock.hand_to_jobs(submitted.job_ids)  # held by the jobs until none is queued or running
    _say(submitted.summary())
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
    """Done / failed / pending chunks with reasons, and whether each master file is up to date, from the
    files of an output folder or a config. Exit 1 when a chunk failed or a master needs a merge."""
    output = Path(target) if isinstance(target, (str, Path)) else Path(target.campaign.output)
    current = read_plan(output)
    states = _with_schedulers(output, chunk_states(current, output, quick=True))
    counts = Counter(st.state for st in states)
    masters = _masters(current, states)
    merge_needed = [m for m in masters if m["state"] == "merge needed"]
    if as_json:
        print(json.dumps({
            "campaign": current.campaign, "output": str(output), "config_hash": current.config_hash,
            "counts": {k: counts.get(k, 0) for k in (DONE, FAILED, PENDING, "queued", "running")},
            "frames": {"total": current.nframes,
                       "done": sum(st.chunk.nframes for st in states if st.state == DONE)},
            "unfinished_scans": current.pending_scans,
            "merge_needed": bool(merge_needed), "masters": masters,
            "chunks": [{"id": st.chunk.id, "dataset": st.chunk.dataset, "scan": st.chunk.scan,
                        "frames": [st.chunk.start, st.chunk.stop], "state": st.state, "reason": st.reason,
                        "permanent": st.permanent}
                       for st in states]}, indent=1))
    else:
        _say(f"campaign {current.campaign}: {output}")
        _say(_plan_summary(current, states))
        if counts.get(FAILED):
            _say("\nfailed chunks:")
            _say(_failures(states))
        for pending in current.pending_scans:
            _say(f"unfinished: {pending['dataset']} scan {pending['scan']} ({pending['reason']})")
        for m in masters:
            if m["state"] == "merge needed":
                _say(f"merge needed: {m['master']}: {m['reason']} (`xreduce merge` or `xreduce run` rebuilds it)")
    return 1 if counts.get(FAILED) or merge_needed else 0


# -- merging --------------------------------------------------------------------------------------
def _entry_name(dataset: str, scan: str) -> str:
    return f"{Path(dataset).stem}_{scan}"


def _beamline(experiment: str) -> str:
    """The beamline of a "proposal/beamline/session" experiment (NXinstrument/name)."""
    parts = experiment.strip("/").split("/")
    return parts[1] if len(parts) == 3 else "unknown"


def _master_name(experiment: str) -> str:
    return experiment.strip("/").replace("/", "_") + ".nxs"


def _experiments(current: Plan) -> dict[str, dict[tuple[str, str], list[Chunk]]]:
    """Experiment → (dataset, scan) → its chunks."""
    scans: dict[str, dict[tuple[str, str], list[Chunk]]] = defaultdict(lambda: defaultdict(list))
    for chunk in current.chunks:
        scans[chunk.experiment][(chunk.dataset, chunk.scan)].append(chunk)
    return scans


def merge_plan(current: Plan, states: list[ChunkState] | None = None,
               merge_config: dict[str, Any] | None = None) -> int:
    """Build one master file per experiment from the chunk files (missing chunks listed, not
    zero-filled), by the plan's reduction kind; ``states``: the chunk states when already known;
    ``merge_config``: the ``merge`` group when not the plan's (``xreduce merge merge.mode=copy``).

    Each experiment stands alone: one whose chunks all failed gets no master (said so), the others
    get theirs. Returns 1 when a master could not be written or misses frames, else 0."""
    output = Path(current.output)
    merge_config = current.config.get("merge", {}) if merge_config is None else merge_config
    mode = merge_config.get("mode", "vds")
    kind = current.kind
    # quick states are enough: the kind's merge checks every chunk file it merges, and reports the others
    done = {st.chunk.id for st in (states if states is not None else chunk_states(current, output, quick=True))
            if st.state == DONE}
    incomplete = False
    for experiment, by_scan in sorted(_experiments(current).items()):
        entries = []
        for (dataset, scan), chunks in sorted(by_scan.items()):
            if all(c.problem for c in chunks):
                continue  # nothing to show: the scan itself could not be read; status names it
            chunks = sorted(chunks, key=lambda c: c.start)
            parts = [(c.start, c.stop, ChunkPaths(output, c.id).result if c.id in done else None) for c in chunks]
            incomplete |= any(part[2] is None for part in parts)
            entries.append(MasterEntry(name=_entry_name(dataset, scan), dataset=dataset, scan=scan,
                                       nframes=chunks[0].nframes_scan, chunks=parts,
                                       chunk_ids=[c.id for c in chunks], beamline=_beamline(experiment)))
        master = output / _master_name(experiment)
        if not any(part[2] for entry in entries for part in entry.chunks):
            incomplete = True
            _say(f"master: {master} not written: none of the chunks of experiment {experiment} is done")
            continue
        try:
            report = kind.merge(master, entries, mode=mode, config_json=current.config_json)
            if not report.complete:
                incomplete = True  # also a chunk file done but refused by the merge's own checks
                _say(report.summary())
            preview = master.with_suffix(".png")
            kind.preview(master, preview)
        except XReduceError as exc:  # this experiment's master: the others are still written
            incomplete = True
            _say(f"master: {master} not written: {exc}")
            continue
        _say(f"master: {master}\npreview: {preview}")
        incomplete |= _export(kind, master, merge_config)
    return 1 if incomplete else 0


def _export(kind: Any, master: Path, merge_config: dict[str, Any]) -> bool:
    """``merge.export``: the kind's ASCII files in ``<master stem>_export/``; True when that failed."""
    if not merge_config.get("export"):
        return False
    folder = master.with_name(f"{master.stem}_export")
    try:
        files = kind.export(master, folder, list(merge_config["export"]), merge_config.get("export_frames", "sum"))
    except XReduceError as exc:
        _say(f"export: {master}: {exc}")
        return True
    _say(f"export: {len(files)} files in {folder}")
    return False


def _masters(current: Plan, states: list[ChunkState]) -> list[dict[str, str]]:
    """Whether each experiment's master file holds the finished chunks of this plan: "merged", "merge
    needed" (missing, older than a chunk result, or holding another config's chunks: the reason says
    which), or "incomplete" (chunks still to run: merged when they are done)."""
    output = Path(current.output)
    by_experiment: dict[str, list[ChunkState]] = defaultdict(list)
    for st in states:
        by_experiment[st.chunk.experiment].append(st)
    out = []
    for experiment, ours in sorted(by_experiment.items()):
        master = output / _master_name(experiment)
        done = {st.chunk.id for st in ours if st.state == DONE}
        row = {"experiment": experiment, "master": str(master), "state": "merged", "reason": ""}
        out.append(row)
        if not done:
            row.update(state="nothing to merge", reason="no chunk is done")
            continue
        if any(st.state not in (DONE, FAILED) for st in ours):
            row.update(state="incomplete", reason="chunks still to run; merged when they are done")
            continue
        if not master.is_file():
            row.update(state="merge needed", reason="no master file")
            continue
        try:
            merged: set[str] | None = current.kind.merged_chunks(master)
        except NotImplementedError:  # a kind that keeps no chunk table: only the file's age tells
            merged = None
        except XReduceError as exc:
            row.update(state="merge needed", reason=str(exc))
            continue
        newest = max(ChunkPaths(output, cid).result.stat().st_mtime for cid in done)
        merged = done if merged is None else merged
        foreign = merged - {st.chunk.id for st in ours}
        if foreign:
            row.update(state="merge needed", reason=f"it holds {len(foreign)} chunk(s) of another config, not "
                                                    f"of config {current.config_hash[:12]}")
        elif done - merged:
            row.update(state="merge needed", reason=f"{len(done - merged)} finished chunk(s) are not in it")
        elif master.stat().st_mtime < newest:
            row.update(state="merge needed", reason="it is older than the newest chunk result")
    return out


def merge(cfg: Any) -> int:
    """(Re)build the master files of a campaign from its finished chunks; failed chunks are listed."""
    from .config import to_dict

    output = Path(cfg.campaign.output)
    with _lock(output, "merge"):
        current = read_plan(output)
        states = chunk_states(current, output, quick=True)  # the merge checks every file it merges
        # this command's merge group (mode, export), not the run's
        code = merge_plan(current, states, merge_config=to_dict(cfg)["merge"])
        if any(st.state == FAILED for st in states):
            _say(_failures(states))
            return 1
        return code


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
