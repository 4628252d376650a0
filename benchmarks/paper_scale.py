#!/usr/bin/env python
"""Dry run of the paper's whole pipeline at the paper's size, with RANDOM weights: how long would it take?

One command, five timed stages, all under ``--work-dir``:
  1. data: a data directory of the paper's size: ``wiki1m/wiki1m_for_simcse.txt`` with 1M lines (the
     shipped Wiki1M prefix, cycled), Flickr30k's 29,000 Multi30k train image names with their 5 shipped
     captions each, and one synthetic JPEG per name under ``flickr30k/images/`` (the layout
     ``teacher_cache.corpora`` reads), plus STS-B dev for the trainer's dev evaluator;
  2. teacher: open_clip ViT-L-14 with RANDOM weights written to a local checkpoint file (the product
     never builds a random teacher; this benchmark supplies it as a file, like real weights);
  3. student: a BERT-base-shaped ``BertConfig`` model with RANDOM weights + the MiniLM uncased tokenizer;
  4. cache: ``scripts/cache_teacher.py`` on that data (open_clip backend, ``teacher.clip_pretrained`` =
     the checkpoint file);
  5. train: ``scripts/train_student.py``, KDMCSE (configs/kdmcse_bert_flickr.yaml) for a few hundred steps.
Then it extrapolates the paper's 3 epochs: steps from the project's schedule (``distill.schedule``) for
the laid-out corpus x measured seconds per training step, plus the measured cache time.

``--scale`` shrinks rows, images and training steps (e.g. 0.001); the paper-size line is then a linear
extrapolation (cache time / scale). ``--tiny-models`` swaps ViT-L-14 for a 1-layer open_clip and
BERT-base for a 2-layer 128-d BERT, so the whole run fits in the test suite on a CPU.

  python benchmarks/paper_scale.py --work-dir runs/paper_scale                  # on a GPU, ~10 min
  python benchmarks/paper_scale.py --work-dir /tmp/ps --scale 0.001 --tiny-models   # CPU rehearsal
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import TrainConfig, load_config, save_config  # noqa: E402
from distill.schedule import BatchPlan, total_steps  # noqa: E402
from teacher_cache.corpora import resolve_data_dir  # noqa: E402
from kdmcse_base.offline_models import minilm_path  # noqa: E402

T = TypeVar("T")
CACHE_STAGE = "cache (scripts/cache_teacher.py)"
PAPER_CONFIG = ROOT / "configs" / "kdmcse_bert_flickr.yaml"
PAPER_WIKI_LINES = 1_000_000
PAPER_FLICKR_IMAGES = 29_000  # Multi30k (= Flickr30k) train split
CAPTIONS_PER_IMAGE = 5
PAPER_EPOCHS = 3
MULTI30K = Path("flickr30k/multi30k/task2")
STSB_DEV = Path("senteval/STS/STSBenchmark/sts-dev.csv")
BERT_SHAPES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 max_position_embeddings=512),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                 max_position_embeddings=64),
    "micro": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64),  # benchmarks/rows_scale.py's teacher: the tokenizer's cost dominates
}
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@dataclass(frozen=True)
class Layout:
    wiki_lines: int
    images: int

    @property
    def captions(self) -> int:
        return self.images * CAPTIONS_PER_IMAGE


# --- 1. data --------------------------------------------------------------------------------------


def scaled(count: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(count * scale))


def lay_out_data(source: Path, target: Path, layout: Layout, image_size: tuple[int, int]) -> None:
    """Wiki1M, Multi30k captions + synthetic photos, and STS-B dev, as ``teacher_cache.corpora`` reads them."""
    write_wiki(source / "wiki1m" / "wiki1m_for_simcse.prefix.txt", target / "wiki1m" / "wiki1m_for_simcse.txt",
               layout.wiki_lines)
    names = write_flickr_captions(source / MULTI30K, target / MULTI30K, layout.images)
    write_jpegs(target / "flickr30k" / "images", names, image_size)
    (target / STSB_DEV).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / STSB_DEV, target / STSB_DEV)


def missing_sources(source: Path) -> list[Path]:
    """The shipped files ``lay_out_data`` reads that ``source`` lacks."""
    needed = [Path("wiki1m/wiki1m_for_simcse.prefix.txt"), MULTI30K / "image_splits" / "train_images.txt", STSB_DEV,
              *(MULTI30K / "raw" / f"train.{k}.en.gz" for k in range(1, CAPTIONS_PER_IMAGE + 1))]
    return [source / path for path in needed if not (source / path).is_file()]


def write_wiki(prefix: Path, target: Path, n_lines: int) -> None:
    """``n_lines`` sentences cycling through the prefix's complete lines (its cut last line is dropped)."""
    lines = [line for line in prefix.read_bytes().split(b"\n")[:-1] if line.strip()]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        for start in range(0, n_lines, len(lines)):
            handle.write(b"\n".join(lines[:min(len(lines), n_lines - start)]) + b"\n")


def write_flickr_captions(source: Path, target: Path, n_images: int) -> list[str]:
    """The first ``n_images`` train image names (cycled, with a suffix, past 29,000) and their captions."""
    shipped = (source / "image_splits" / "train_images.txt").read_text().split()
    names = [name if i < len(shipped) else f"{Path(name).stem}_{i // len(shipped)}.jpg"
             for i, name in ((i, shipped[i % len(shipped)]) for i in range(n_images))]
    (target / "image_splits").mkdir(parents=True, exist_ok=True)
    (target / "image_splits" / "train_images.txt").write_text("".join(f"{name}\n" for name in names))
    (target / "raw").mkdir(parents=True, exist_ok=True)
    for k in range(1, CAPTIONS_PER_IMAGE + 1):
        with gzip.open(source / "raw" / f"train.{k}.en.gz", "rb") as handle:
            captions = handle.read().split(b"\n")[:len(shipped)]
        cycled = [captions[i % len(shipped)] for i in range(n_images)]
        with gzip.open(target / "raw" / f"train.{k}.en.gz", "wb", compresslevel=1) as handle:
            handle.write(b"\n".join(cycled) + b"\n")
    return names


def write_jpegs(folder: Path, names: list[str], size: tuple[int, int], distinct: int = 64) -> None:
    """One synthetic JPEG per name at a photo's size: ``distinct`` different smooth random pictures
    (coarse noise, upsampled), cycled, so decoding costs what a photo of that size costs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(distinct):
        coarse = rng.integers(0, 256, size=(max(1, size[1] // 16), max(1, size[0] // 16), 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(coarse).resize(size, Image.BILINEAR).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(blobs[i % distinct])


# --- 2./3. random models (benchmark only) ------------------------------------------------------------


def write_random_teacher(folder: Path, tiny: bool) -> list[str]:
    """RANDOM open_clip weights on disk; returns the teacher overrides that load them."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "RANDOM_WEIGHTS.txt").write_text("Random open_clip weights: for speed benchmarks only.\n")
    torch.manual_seed(0)
    if tiny:
        config = {"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
        (folder / "open_clip_config.json").write_text(json.dumps(config))
        torch.save(open_clip.CLIP(**TINY_OPEN_CLIP).state_dict(), folder / "open_clip_pytorch_model.bin")
        return [f"teacher.clip_model=local-dir:{folder}", "teacher.clip_pretrained=null"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = open_clip.create_model("ViT-L-14", pretrained=None, device=device)
    checkpoint = folder / "ViT-L-14-RANDOM.pt"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, checkpoint)
    return ["teacher.clip_model=ViT-L-14", f"teacher.clip_pretrained={checkpoint}"]


def save_random_bert(folder: Path, size: str, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A transformers folder: BertModel with RANDOM weights in the ``size`` shape + the MiniLM tokenizer.

    ``student.model`` can point at it (``build_encoder`` wraps it in Transformer + Pooling).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, **BERT_SHAPES[size])
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(folder)  # with its pooler, as bert-base-uncased ships
    tokenizer.save_pretrained(folder)
    (folder / "RANDOM_WEIGHTS.txt").write_text("Random weights from a BertConfig: for speed benchmarks only.\n")
    return folder


# --- 4./5. the project's own scripts ------------------------------------------------------------------


def run_script(script: str, args: list[str], log: Path) -> None:
    """Run ``scripts/<script>`` in a subprocess (this checkout first on the path), its output to ``log``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with log.open("w") as handle:
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"{script} failed (exit {result.returncode}); last lines of {log}:\n{tail}")


# --- extrapolation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extrapolation:
    steps_per_epoch: int
    epoch_steps_total: int  # PAPER_EPOCHS epochs
    seconds_per_step: float
    cache_seconds: float
    train_seconds: float  # epoch_steps_total x seconds_per_step
    total_seconds: float  # cache + train


def extrapolate(layout: Layout, train: TrainConfig, seconds_per_step: float, cache_seconds: float) -> Extrapolation:
    """The paper's epochs over this layout: the project's schedule (text pool = Wiki1M, paired pool = captions)
    at the run's batch size and schedule."""
    plan = BatchPlan(layout.wiki_lines, layout.captions, train.batch_size, train.paired_every, train.schedule)
    per_epoch, steps = total_steps(plan, 1, None), total_steps(plan, PAPER_EPOCHS, None)
    seconds = steps * seconds_per_step
    return Extrapolation(per_epoch, steps, seconds_per_step, cache_seconds, seconds, cache_seconds + seconds)


def pool_sizes(config_file: Path, data_dir: Path) -> tuple[int, int]:
    """(text pool, paired pool) as the trainer builds them from the cache (the only one in the fresh root)."""
    from distill.pools import build_pools
    from teacher_cache import TeacherCache

    cfg = load_config(config_file)
    (manifest,) = Path(cfg.train.cache_root).glob("*/manifest.json")
    cache = TeacherCache.open(manifest.parent)
    pools = build_pools(cache, cfg.train.retrieval_holdout_images)
    return pools.n_text, pools.n_paired


class Stages:
    """Wall seconds of each stage, printed as each one ends (a run cut short still says how far it got)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = work()
        self.seconds[name] = time.perf_counter() - started
        print(f"[paper_scale] {name}: {self.seconds[name]:.1f} s", flush=True)
        return result


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="everything is written here")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the paper's rows, images and steps")
    parser.add_argument("--tiny-models", action="store_true", help="1-layer open_clip and 2-layer BERT (CPU rehearsal)")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps at scale 1 (scaled, at least 8)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="student training precision")
    parser.add_argument("--image-size", default="500x375", help="synthetic JPEG WxH (Flickr30k photos are ~500x375)")
    parser.add_argument("--source-data", default=None, help="shipped data (wiki1m/, flickr30k/, senteval/); default: resolved")
    parser.add_argument("--tokenizer", type=Path, default=None, help="MiniLM tokenizer folder (default: offline package)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown summary here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = input_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    result = dry_run(args, work)
    (work / "paper_scale.json").write_text(json.dumps(result, indent=2))
    report = render(result, " ".join(sys.argv[1:]))
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


def parse_image_size(text: str) -> tuple[int, int] | None:
    """``"500x375"`` -> (500, 375); None when it is not two positive integers joined by x."""
    size = text.lower().split("x")
    if len(size) != 2 or not all(v.isdigit() and int(v) > 0 for v in size):
        return None
    return int(size[0]), int(size[1])


def input_problem(args: argparse.Namespace) -> str | None:
    """One line saying what is wrong with the command line, or None."""
    if not 0 < args.scale <= 1:
        return f"--scale must be in (0, 1], got {args.scale}"
    if (args.work_dir / "run").exists() or (args.work_dir / "cache").exists():
        return f"{args.work_dir} holds an earlier run (run/ or cache/); give a fresh --work-dir"
    if parse_image_size(args.image_size) is None:
        return f"--image-size expects WxH such as 500x375, got {args.image_size!r}"
    missing = missing_sources(resolve_data_dir(args.source_data))
    if missing:
        return (f"--source-data lacks {missing[0]}; point it at the shipped data (or at runs/device_inputs/data "
                "from benchmarks/device_run.sh prepare)")
    return None


def dry_run(args: argparse.Namespace, work: Path) -> dict:
    """The five stages, then the extrapolation; returns what paper_scale.json holds."""
    layout = Layout(scaled(PAPER_WIKI_LINES, args.scale, 64), scaled(PAPER_FLICKR_IMAGES, args.scale, 16))
    train_steps = scaled(args.train_steps, args.scale, 8)  # 8: a paired step (every 7th here) is in
    image_size = parse_image_size(args.image_size)
    stages = Stages()
    stages.time("lay out data", lambda: lay_out_data(resolve_data_dir(args.source_data), work / "data", layout,
                                                     image_size))
    teacher_overrides = stages.time("write random teacher checkpoint",
                                    lambda: write_random_teacher(work / "teacher", args.tiny_models))
    student = stages.time("write random student", lambda: save_random_bert(
        work / "student", "tiny" if args.tiny_models else "base", args.tokenizer or minilm_path()))
    config_file = work / "run_config.yaml"
    cfg = load_config(PAPER_CONFIG, [
        f"student.model={student}", *teacher_overrides, f"train.output_dir={work / 'run'}",
        f"train.cache_root={work / 'cache'}", f"train.max_steps={train_steps}", f"train.eval_every={train_steps}",
        f"train.precision={args.precision}", f"data_dir={work / 'data'}"])
    save_config(cfg, config_file)
    common = ["--config", str(config_file), "--data-dir", str(work / "data")]
    stages.time(CACHE_STAGE, lambda: run_script("cache_teacher.py", [*common, "--no-progress"], work / "cache.log"))
    stages.time("train (scripts/train_student.py)", lambda: run_script("train_student.py", common, work / "train.log"))
    summary = json.loads((work / "run" / "train_summary.json").read_text())
    n_text, n_paired = pool_sizes(config_file, work / "data")
    seconds_per_step = summary["train_seconds"] / summary["steps"]
    cache_seconds = stages.seconds[CACHE_STAGE]
    here = extrapolate(Layout(n_text, n_paired // CAPTIONS_PER_IMAGE), cfg.train, seconds_per_step,
                       cache_seconds)
    paper = extrapolate(Layout(PAPER_WIKI_LINES, PAPER_FLICKR_IMAGES), cfg.train, seconds_per_step,
                        cache_seconds / args.scale)
    return {
        "scale": args.scale, "tiny_models": args.tiny_models, "precision": args.precision,
        "layout": {"wiki_lines": layout.wiki_lines, "images": layout.images, "captions": layout.captions},
        "pools": {"text": n_text, "paired": n_paired},
        "train_steps_asked": train_steps, "train_summary": {k: summary[k] for k in ("steps", "train_seconds", "device")},
        "stages_seconds": stages.seconds, "this_layout": asdict(here), "paper_size": asdict(paper),
    }


def render(result: dict, command: str) -> str:
    here, paper = result["this_layout"], result["paper_size"]
    models = ("tiny open_clip + 2-layer BERT (rehearsal)" if result["tiny_models"]
              else "open_clip ViT-L-14 + BERT-base shape")
    lines = [
        "# Paper-scale dry run: RANDOM weights, timing only",
        "",
        f"`python benchmarks/paper_scale.py {command}`; models: {models}; device: {result['train_summary']['device']}; "
        f"student precision {result['precision']}.",
        "",
        f"Data: {result['layout']['wiki_lines']:,} Wiki1M lines, {result['layout']['images']:,} Flickr30k images x "
        f"{CAPTIONS_PER_IMAGE} captions (scale {result['scale']}); pools: {result['pools']['text']:,} text, "
        f"{result['pools']['paired']:,} paired.",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in result["stages_seconds"].items()],
        "",
        f"Training: {result['train_summary']['steps']} steps in {result['train_summary']['train_seconds']:.1f} s "
        f"= {here['seconds_per_step'] * 1e3:.1f} ms/step (trainer's own clock, evaluation excluded).",
        "",
        "| extrapolation | steps/epoch | steps (3 epochs) | train min | cache min | total min |",
        "|---|---|---|---|---|---|",
        _row("this layout", here),
        _row("paper size (cache time / scale)" if result["scale"] < 1 else "paper size", paper),
    ]
    return "\n".join(lines) + "\n"


def _row(name: str, e: dict) -> str:
    return (f"| {name} | {e['steps_per_epoch']:,} | {e['epoch_steps_total']:,} | {e['train_seconds'] / 60:.1f} | "
            f"{e['cache_seconds'] / 60:.1f} | {e['total_seconds'] / 60:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
