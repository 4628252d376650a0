#!/usr/bin/env python
"""Rehearse a cache build at scale on this machine: WebDataset shards in, two processes, a kill -9.

SYNTHETIC DATA: the shards hold small random-colour JPEGs with made-up captions ("a photo of 3 red
squares"), written by this script in img2dataset's layout (``key.jpg`` + ``key.txt`` + ``key.json`` per
sample, ``NNNNN.tar`` per shard). They measure the pipeline, not the teacher's quality.

For each shard count of ``--shards`` the cache of those shards (the offline teacher: all-MiniLM-L6-v2
text + EfficientNet-Lite0 images) is built by ``torchrun --nproc_per_node 2 scripts/cache_teacher.py``,
timed, with the peak resident memory of its processes and how many input tars each rank read (each
reads its own, ``shards[rank::2]``, into a per-tar index; rank 0 then reads the indexes). The largest
count is then built twice more, each killed (SIGKILL to torchrun and every worker) and rerun to the end:
once while the ranks read the input tars (the index folder emptied first), once when its first cache
shards are on disk; each resumed cache is compared file by file (sha256) with the uninterrupted build.
The report states rows/s per process, peak RSS against the number of input shards, the tars each rank
read, the resumed-after-kill rows, and a projection (labelled) of the time for 10M and 100M pairs.

    HF_HUB_OFFLINE=1 python benchmarks/wds_rehearsal.py --shards 4,16 --per-shard 64 --report reports/wds_rehearsal.md
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (200, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 200), "yellow": (230, 210, 40)}


def write_shards(folder: Path, shards: int, per_shard: int, seed: int = 0) -> str:
    """``shards`` tar files of ``per_shard`` synthetic samples; returns their brace pattern."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index in range(per_shard):
                key = f"{shard:05d}{index:04d}"
                colour = rng.choice(sorted(COLOURS))
                count = rng.randint(1, 9)
                image = Image.new("RGB", (rng.randint(48, 96), rng.randint(48, 96)), COLOURS[colour])
                buffer = io.BytesIO()
                image.save(buffer, "JPEG")
                caption = f"a photo of {count} {colour} squares"
                for ext, data in (("jpg", buffer.getvalue()), ("txt", caption.encode()),
                                  ("json", json.dumps({"caption": caption, "key": key}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def build_command(pattern: str, cache_root: Path, processes: int, image_store: Path) -> list[str]:
    """Every build stores images in one ``image_store``: the manifests of two builds of the same shards
    then agree to the byte, wherever their cache roots are."""
    data = {"text_sources": [], "image_sources": [{"shards": pattern, "name": "synthetic"}],
            "image_store": str(image_store)}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            str(ROOT / "scripts" / "cache_teacher.py"), "--no-progress", "teacher.num_workers=0",
            f"data={json.dumps(data)}", f"train.cache_root={cache_root}", "train.cache_shard_rows=256"]


@dataclass
class Build:
    """One build: seconds, return code, peak RSS in MiB of the largest process, and its output."""

    seconds: float
    rc: int
    peak_rss_mib: int
    output: str

    def tars_read(self) -> dict[int, int]:
        """Input tars each rank read into an index (its log line: ``rank R of N: part R/N: ... M read``)."""
        return {int(rank): int(read) for rank, read in
                re.findall(r"rank (\d+) of \d+: part \d+/\d+: \d+ input shard\(s\), (\d+) read", self.output)}


def run_build(command: list[str], kill_when=None, poll: float = 0.2) -> Build:
    """One build; ``kill_when()`` returning True sends SIGKILL to the launcher and every process below it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=ROOT)
    peak = 0
    while proc.poll() is None:
        tree = process_tree(proc.pid)
        peak = max(peak, largest_rss_mib(tree))
        if kill_when is not None and kill_when():
            for pid in process_tree(proc.pid):  # torchrun's workers included: see process_tree
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
            proc.wait()
            break
        time.sleep(poll)
    output = proc.stdout.read()
    if proc.returncode not in (0, -signal.SIGKILL):
        print(output[-3000:], file=sys.stderr)
    return Build(time.perf_counter() - started, proc.returncode, peak, output)


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, by parent pid. torchrun starts each worker in a session of its
    own, so the launcher's process group does not hold them: a ``killpg`` of the launcher leaves the
    workers running (the build then finishes unkilled) and the group's RSS is the launcher's alone."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # field 4 of stat: the parent pid
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def largest_rss_mib(pids: list[int]) -> int:
    """The largest resident set (MiB) among ``pids``."""
    largest = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue
        largest = max(largest, rss // 1024)
    return largest


def cache_digest(cache_root: Path) -> dict[str, str]:
    """sha256 of every file of the (one) cache folder under ``cache_root``."""
    (folder,) = [p for p in cache_root.iterdir() if p.is_dir() and (p / "manifest.json").is_file()]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rehearse(work: Path, shard_counts: list[int], per_shard: int, processes: int) -> dict:
    rows = []
    for shards in shard_counts:
        pattern = write_shards(work / f"shards{shards}", shards, per_shard)
        cache_root = work / f"cache{shards}" / "teacher"
        build = run_build(build_command(pattern, cache_root, processes, work / "images"))
        pairs = shards * per_shard
        rows.append({"shards": shards, "pairs": pairs, "seconds": round(build.seconds, 1), "rc": build.rc,
                     "peak_rss_mib": build.peak_rss_mib, "tars_read_per_rank": build.tars_read(),
                     "pairs_per_s_per_process": round(pairs / build.seconds / processes, 2)})
    largest = shard_counts[-1]
    pattern = str(work / f"shards{largest}" / f"{{00000..{largest - 1:05d}}}.tar")
    reference = cache_digest(work / f"cache{largest}" / "teacher")
    indexes = work / "images" / ".shards"
    shutil.rmtree(indexes, ignore_errors=True)  # the tars must be read again: kill while they are
    killed_reading = kill_and_resume(pattern, work / "killed_reading" / "teacher", processes, work, reference,
                                     lambda root: len(list(indexes.glob("*.json"))) >= 1, poll=0.02)
    killed_encoding = kill_and_resume(pattern, work / "killed" / "teacher", processes, work, reference,
                                      lambda root: any(root.glob("*/*/shard-*.npy")))
    return {"rows": rows, "processes": processes, "per_shard": per_shard, "input_shards": largest,
            "killed_reading": killed_reading, "killed": killed_encoding}


def kill_and_resume(pattern: str, cache_root: Path, processes: int, work: Path, reference: dict[str, str],
                    kill_when, poll: float = 0.2) -> dict:
    """SIGKILL a build once ``kill_when(cache_root)``, rerun it, compare the cache with ``reference``."""
    indexes = work / "images" / ".shards"
    command = build_command(pattern, cache_root, processes, work / "images")
    killed = run_build(command, kill_when=lambda: kill_when(cache_root), poll=poll)
    indexed_at_kill = len(list(indexes.glob("*.json")))
    cache_shards_at_kill = sum(1 for _ in cache_root.glob("*/*/shard-*.npy.sha256"))
    rerun = run_build(command)
    identical = rerun.rc == 0 and cache_digest(cache_root) == reference
    return {"kill_code": killed.rc, "indexes_at_kill": indexed_at_kill,
            "cache_shards_at_kill": cache_shards_at_kill,
            "rerun_seconds": round(rerun.seconds, 1), "rerun_rc": rerun.rc, "rerun_tars_read": rerun.tars_read(),
            "identical": identical}


def projection(rate_per_process: float) -> str:
    hours = {n: n / rate_per_process / 3600 for n in (10_000_000, 100_000_000)}
    return (f"at the measured {rate_per_process:.1f} pairs/s per CPU process, 10M pairs take "
            f"{hours[10_000_000]:,.0f} process-hours and 100M {hours[100_000_000]:,.0f}")


def per_rank(counts: dict) -> str:
    """``8 + 8`` (rank 0 + rank 1), from a JSON-loaded or fresh {rank: count}."""
    return " + ".join(str(counts[rank]) for rank in sorted(counts, key=int)) if counts else "-"


def killed_row(label: str, killed: dict, processes: int) -> str:
    state = (f"{killed['indexes_at_kill']} input tars indexed, {killed['cache_shards_at_kill']} cache shards written")
    return (f"| {label} | exit {killed['kill_code']}: {state} | exit {killed['rerun_rc']} in {killed['rerun_seconds']} s | "
            f"{per_rank(killed['rerun_tars_read'])} | {'**yes**' if killed['identical'] else '**no**'} |")


def markdown(result: dict, command: str, load: str) -> str:
    from kdmcse_base.machine import cpu_name

    processes = result["processes"]
    lines = ["# Cache build rehearsal at scale: WebDataset shards, 2 processes, a kill -9", "",
             "**Synthetic data**: small random-colour JPEGs with made-up captions, written in img2dataset's "
             "layout by the benchmark itself. They measure the pipeline, not quality.", "",
             f"Generated by `{command}` on {os.cpu_count()} CPU cores ({cpu_name()}), shared with other jobs "
             f"(load average {load}); teacher: the offline "
             f"all-MiniLM-L6-v2 + EfficientNet-Lite0, `precision: auto`; {processes} processes "
             f"(`torchrun --nproc_per_node {processes}`), {result['per_shard']} pairs per input shard.", "",
             "| input shards | pairs | build seconds | pairs/s per process | peak RSS of a process (MiB) | "
             "input tars read per rank (rank 0 + rank 1) | rc |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['shards']} | {row['pairs']} | {row['seconds']} | {row['pairs_per_s_per_process']} | "
                     f"{row['peak_rss_mib']} | {per_rank(row['tars_read_per_rank'])} | {row['rc']} |")
    lines += ["", "Each rank read only its own input tars (`shards[rank::2]`), each into one index file "
              "(`<image_store>/.shards/<digest>.json`: keys, image file named by its sha256, captions, decode "
              "problems); rank 0 then built the rows from the indexes without reading, hashing or decoding "
              "an image again. Each shard count has its own tars, so each row read all of them once.", "",
              f"**Killed and resumed** ({result['input_shards']} input shards; SIGKILL to torchrun and each of its workers, then "
              "the same command; *identical*: sha256 of every cache file equal to the uninterrupted build's):", "",
              "| killed while | state at the kill | rerun | input tars the rerun read (rank 0 + rank 1) | identical |",
              "|---|---|---|---|---|",
              killed_row("reading the input tars (index folder emptied first)", result["killed_reading"], processes),
              killed_row("encoding (first cache shards on disk)", result["killed"], processes), "",
              "*Correction.* The previous version of this report (commit fb7d2f4) sent SIGKILL to torchrun's process "
              "group, which does not hold the workers (torchrun starts each in a session of its own): they went on, "
              "so its killed build in fact finished unkilled, and its peak RSS (518 / 532 MiB) was the launcher's. "
              "Kills and RSS now cover the launcher's whole process tree.", "",
              f"**Projection** (arithmetic on measured rates, not a measurement). CPU: "
              f"{projection(result['rows'][-1]['pairs_per_s_per_process'])}; build seconds include each process's "
              "start (imports, both towers loaded), a large part of the time at these sizes, so the rate grows with "
              "the number of pairs and this is an upper bound. Per GPU: **open**. No measured GPU rate of a teacher "
              "forward is in `reports/`: the only GPU figures there (`reports/train_speed_cuda.md`, H100) are "
              "student *training* steps, and `reports/paper_scale.md` lists the GPU cache benchmark "
              "(`benchmarks/paper_cache_speed.py` in `benchmarks/device_run.sh`) as not yet run; no GPU was lent "
              "to this session. Once it runs, a GPU encoding R pairs/s (both towers) needs 10M/R s for 10M pairs "
              "and 100M/R s for 100M; at R = 1,000 that is 2.8 h and 27.8 h (an example value, not a measurement).",
              "",
              "**What this build does and does not do at scale.** Each rank reads its own share of the input tars "
              "(a Slurm array can do the same with `scripts/cache_teacher.py --index-part K/N`, docs/data.md); rank "
              "0 then reads every index (small JSON, one stat per image file) and plans; the ranks split the "
              "cache's own shards; a killed build reads again only the tars without an index and encodes only the "
              "cache shards without a checksum. Still on rank 0 and in every rank's memory: the plan (every row's "
              "id and text, broadcast as one Python object), which grows with the number of pairs."]
    return "\n".join(lines) + "\n"


def load_average() -> str:
    """The 1-minute load average at the start and now (``os.getloadavg``), as ``start -> end``."""
    return f"{_LOAD_AT_START:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"


_LOAD_AT_START = os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="4,16", help="input shard counts, comma-separated")
    parser.add_argument("--per-shard", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    command = "HF_HUB_OFFLINE=1 python benchmarks/wds_rehearsal.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="wds_rehearsal_") as scratch:
        work = args.work_dir or Path(scratch)
        result = rehearse(work, [int(n) for n in args.shards.split(",")], args.per_shard, args.processes)
    text = markdown(result, command.strip(), load_average())
    if args.report:
        args.report.write_text(text)
        args.report.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(text)
    return 0 if result["killed"]["identical"] and result["killed_reading"]["identical"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
