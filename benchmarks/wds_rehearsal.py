#!/usr/bin/env python
"""Rehearse a cache build at scale on this machine: WebDataset shards in, two processes, a kill -9.

SYNTHETIC DATA: the shards hold small random-colour JPEGs with made-up captions ("a photo of 3 red
squares"), written by this script in img2dataset's layout (``key.jpg`` + ``key.txt`` + ``key.json`` per
sample, ``NNNNN.tar`` per shard). They measure the pipeline, not the teacher's quality.

For each shard count of ``--shards`` the cache of those shards (the offline teacher: all-MiniLM-L6-v2
text + EfficientNet-Lite0 images) is built by ``torchrun --nproc_per_node 2 scripts/cache_teacher.py``,
timed, with the peak resident memory of its processes. The largest count is then built again and
killed (SIGKILL to the whole process group) once its first cache shards are on disk, rerun to the end,
and compared file by file (sha256) with the uninterrupted build. The report states rows/s per process,
peak RSS against the number of input shards, the resumed-after-kill row, and a projection (labelled)
of the time for 10M and 100M pairs from the measured rates.

    HF_HUB_OFFLINE=1 python benchmarks/wds_rehearsal.py --shards 4,16 --per-shard 64 --report reports/wds_rehearsal.md
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
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


def run_build(command: list[str], kill_when=None) -> tuple[float, int, int]:
    """(seconds, return code, peak RSS in MiB of the largest process) of one build; ``kill_when()``
    returning True sends SIGKILL to the whole group."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=ROOT)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, group_rss_mib(proc.pid))
        if kill_when is not None and kill_when():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.2)
    output = proc.stdout.read()
    if proc.returncode not in (0, -signal.SIGKILL):
        print(output[-3000:], file=sys.stderr)
    return time.perf_counter() - started, proc.returncode, peak


def group_rss_mib(leader: int) -> int:
    """The largest resident set (MiB) among the processes of ``leader``'s group."""
    largest = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == leader:  # field 5 of stat: the process group
                status = (stat.parent / "status").read_text()
                rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
                largest = max(largest, rss // 1024)
        except (OSError, IndexError, StopIteration, ValueError):
            continue
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
        seconds, code, peak = run_build(build_command(pattern, cache_root, processes, work / "images"))
        pairs = shards * per_shard
        rows.append({"shards": shards, "pairs": pairs, "seconds": round(seconds, 1), "rc": code, "peak_rss_mib": peak,
                     "pairs_per_s_per_process": round(pairs / seconds / processes, 2)})
    largest = shard_counts[-1]
    pattern = str(work / f"shards{largest}" / f"{{00000..{largest - 1:05d}}}.tar")
    killed_root = work / "killed" / "teacher"
    shards_on_disk = lambda: any(killed_root.glob("*/*/shard-*.npy"))  # noqa: E731
    command = build_command(pattern, killed_root, processes, work / "images")
    _, kill_code, _ = run_build(command, kill_when=shards_on_disk)
    seconds, code, _ = run_build(command)
    identical = code == 0 and cache_digest(killed_root) == cache_digest(work / f"cache{largest}" / "teacher")
    return {"rows": rows, "processes": processes, "per_shard": per_shard,
            "killed": {"kill_code": kill_code, "rerun_seconds": round(seconds, 1), "rerun_rc": code,
                       "identical": identical}}


def projection(rate_per_process: float) -> str:
    hours = {n: n / rate_per_process / 3600 for n in (10_000_000, 100_000_000)}
    return (f"at the measured {rate_per_process:.1f} pairs/s per CPU process, 10M pairs take "
            f"{hours[10_000_000]:.0f} process-hours and 100M {hours[100_000_000]:.0f} (projection)")


def markdown(result: dict, command: str) -> str:
    from kdmcse_base.machine import cpu_name

    lines = ["# Cache build rehearsal at scale: WebDataset shards, 2 processes, a kill -9", "",
             "**Synthetic data**: small random-colour JPEGs with made-up captions, written in img2dataset's "
             "layout by the benchmark itself. They measure the pipeline, not quality.", "",
             f"Generated by `{command}` on {os.cpu_count()} CPU cores ({cpu_name()}); teacher: the offline "
             f"all-MiniLM-L6-v2 + EfficientNet-Lite0, `precision: auto`; {result['processes']} processes "
             f"(`torchrun --nproc_per_node {result['processes']}`), {result['per_shard']} pairs per input shard.", "",
             "| input shards | pairs | build seconds | pairs/s per process | peak RSS of a process (MiB) | rc |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['shards']} | {row['pairs']} | {row['seconds']} | {row['pairs_per_s_per_process']} | "
                     f"{row['peak_rss_mib']} | {row['rc']} |")
    killed = result["killed"]
    lines += ["", f"**Killed and resumed** ({result['rows'][-1]['shards']} input shards): SIGKILL to the whole group "
              f"once the first cache shards were on disk (exit {killed['kill_code']}), then the same command: exit "
              f"{killed['rerun_rc']} in {killed['rerun_seconds']} s, and the cache is "
              f"{'byte-identical (sha256 of every file)' if killed['identical'] else '**not** identical'} to the "
              "uninterrupted build.", "",
              f"**Projection.** {projection(result['rows'][-1]['pairs_per_s_per_process'])} on this CPU; a GPU's "
              "rate for the paper teacher is open (no GPU was lent for it: `benchmarks/device_run.sh`). Build seconds "
              "include each process's start (imports, both towers loaded): at these sizes that start is a large part "
              "of the time, so the rate grows with the number of pairs and the projection is an upper bound.", "",
              "**What this build does and does not do at scale.** Every rank reads the shard list, rank 0 collects the "
              "rows (each image stored once in `data.image_store` by the sha256 of its bytes), and the ranks split "
              "the cache's own shards; a killed build redoes only the cache shards it had not finished. Splitting "
              "the *input* shards across ranks, each decoding only its own, is not built yet."]
    return "\n".join(lines) + "\n"


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
    text = markdown(result, command.strip())
    if args.report:
        args.report.write_text(text)
        args.report.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(text)
    return 0 if result["killed"]["identical"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
