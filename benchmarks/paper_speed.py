#!/usr/bin/env python
"""Paper-size training step (BERT-base student, 768-d teacher) with RANDOM weights: speed only.

What it builds (nothing is downloaded, nothing here is ever a product model):
  * student: a ``BertConfig`` BERT-base shape (hidden 768, 12 layers, 12 heads, intermediate 3072) with
    random weights, the offline MiniLM tokenizer (the same uncased WordPiece vocabulary as
    bert-base-uncased), wrapped as the project wraps it (Transformer + Pooling cls, MLP head);
  * teacher: a cache of random 768-d unit vectors written by the project's own cache writer for 2,000
    Wiki1M sentences and 64 Flickr30k images (synthetic JPEGs) with their 5 shipped captions each
    (labelled ``random-unit-768``).

What it times, in one run, each in fp32 and bf16, eager and under ``torch.compile`` of the encoder:
  * the project's ``training_step`` for SimCSE, KDMCSE (angular + AdapACSE) and KDMCSE + threshold
    filter + soft-target KL, on one fixed paired batch of 64 Flickr30k captions x 2 dropout views, max 32 tokens,
    its inputs prepared ahead as the trainer's step loader prepares them (the device copy is timed);
  * a tight reference loop: the same encoder shape doing SimCSE on the same batch pre-tokenised on the
    device, fused AdamW on CUDA, no host syncs inside the step.
  * the project's default recipe (embedding regression, one dropout view) against sentence-transformers' own
    distillation recipe (``MSELoss`` to the same cached teacher rows through ``SentenceTransformerTrainer``,
    its whole step as its ``train()`` loop runs it, collating included; eager only): the race of
    ``benchmarks/race_st.py`` at BERT-base size, steps/s only (random weights say nothing of quality).
Every configuration takes one step in turn (A, B, C, ..., A, B, C, ...) so all see the same machine
load; the report gives medians, TFLOP/s and the ratio to the SimCSE step at the same precision and
compile setting. FLOPs per step are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode``
over one eager forward + backward of each step (matmuls and attention; element-wise work is not
counted); the analytic 6 x params x tokens of the encoder is printed beside it.

  python benchmarks/paper_speed.py                       # BERT-base, 20 timed steps, writes reports/
  python benchmarks/paper_speed.py --size tiny --steps 2 --compile eager --out /tmp/speed.md   # CPU rehearsal
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.paper_scale import BERT_SHAPES, Layout, lay_out_data, save_random_bert  # noqa: E402
from distill.config import load_config  # noqa: E402
from distill.pools import TrainingPools, build_pools  # noqa: E402
from distill.recipes import METHODS  # noqa: E402
from distill.run import TrainingRun, compile_encoder  # noqa: E402
from distill.schedule import Step  # noqa: E402
from distill.student import build_encoder  # noqa: E402
from teacher_cache import CacheDataConfig, TeacherCache, TeacherConfig, build_cache  # noqa: E402
from teacher_cache.corpora import resolve_data_dir  # noqa: E402
from kdmcse_base.process_group import DistEnv  # noqa: E402
from kdmcse_base.offline_models import minilm_path  # noqa: E402

PAPER_CONFIG = ROOT / "configs" / "kdmcse_bert_flickr.yaml"
TEACHER_DIM = 768  # CLIP ViT-L/14's embedding width
MAX_TOKENS = 32
TIGHT = "tight SimCSE loop (pre-tokenised, fused AdamW on CUDA, no host syncs)"
SIMCSE = "SimCSE (project)"
VARIANTS: dict[str, list[str]] = {
    SIMCSE: ["loss.text=simcse", "loss.multimodal=none", "loss.false_negative_filter=none",
             "loss.soft_target_weight=0", "loss.same_image_mask=false"],
    "KDMCSE angular + AdapACSE (project)": ["loss.text=angular", "loss.multimodal=adapacse",
                                            "loss.false_negative_filter=none", "loss.soft_target_weight=0"],
    "KDMCSE + threshold filter + soft-target KL (project)": ["loss.text=angular", "loss.multimodal=adapacse",
                                                             "loss.false_negative_filter=threshold",
                                                             "loss.soft_target_weight=1"],
}
REGRESSION = "Embedding regression, one view (project)"
VARIANTS[REGRESSION] = list(METHODS["regression"].overrides)
ST_TRAINER = "sentence-transformers trainer, MSELoss (its own step)"
STEP_NAMES = [*VARIANTS, TIGHT, ST_TRAINER]


# --- random models (benchmark only) ---------------------------------------------------------------


class RandomUnitTeacher:
    """Seeded random unit vectors in place of a teacher: the cache then has the paper's 768-d shape.

    Only this benchmark uses it; the product never builds a teacher without real weights.
    """

    shared_space = True

    def __init__(self, dim: int = TEACHER_DIM, seed: int = 0):
        self.text_dim = self.image_dim = dim
        self.name = f"random-unit-{dim}"
        self.identity = {"backend": "RANDOM unit vectors (benchmark only)", "dim": dim, "seed": seed}
        self._generator = torch.Generator().manual_seed(seed)

    def _unit(self, n: int) -> torch.Tensor:
        return F.normalize(torch.randn(n, self.text_dim, generator=self._generator), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self._unit(len(texts))

    def encode_image(self, images: Sequence) -> torch.Tensor:
        return self._unit(len(images))


def random_teacher_cache(work: Path, source_data: Path) -> tuple[TeacherCache, TrainingPools]:
    """The paper's corpora in small (2,000 Wiki1M lines, 64 Flickr30k images as synthetic JPEGs with their
    5 shipped captions each) with random 768-d teacher vectors, through the project's cache writer."""
    data_dir = work / "data"
    lay_out_data(source_data, data_dir, Layout(wiki_lines=2000, images=64), (64, 48))
    data_cfg = CacheDataConfig(text_sources=("wiki1m", "flickr30k_train"), image_sources=("flickr30k_train",))
    report = build_cache(TeacherConfig(), data_cfg, work / "cache", data_dir, progress=False,
                         teacher=RandomUnitTeacher())
    cache = TeacherCache.open(report.path)
    return cache, build_pools(cache)


# --- the coupling to distill/trainer.py (the one place to adapt when its API changes) --------------


def project_step_fn(run: TrainingRun, step: Step) -> Callable[[], None]:
    """One optimisation step through the trainer's own code, as its loop runs it: the step's inputs
    (rows, tokens, teacher rows) are prepared ahead, off the clock, as the trainer's step loader does
    while the previous step runs; the timed step copies them to the device, forwards, backwards, updates."""
    from distill.step_loader import prepare_inputs
    from distill.trainer import training_step

    prepared = prepare_inputs(run, step)
    prepared = prepared.pin_memory() if run.env.device.type == "cuda" else prepared
    return lambda: training_step(run, step, prepared.to(run.env.device))


# --- the configurations timed -----------------------------------------------------------------------


def build_project_variant(overrides: list[str], student_dir: Path, cache: TeacherCache, pools: TrainingPools,
                          device: torch.device) -> TrainingRun:
    """The trainer's own run (``distill.run.build_run``) of the paper config with ``overrides``."""
    from distill.run import build_run

    cfg = load_config(PAPER_CONFIG, [f"student.model={student_dir}", f"student.max_seq_length={MAX_TOKENS}",
                                     "train.batch_size=64", *overrides])
    torch.manual_seed(0)
    return build_run(cfg, DistEnv(0, 1, device), cache, pools)


class TightSimCSE(nn.Module):
    """SimCSE on [CLS] + MLP over pre-tokenised ids: the least a step of this shape must do."""

    def __init__(self, backbone: nn.Module, temperature: float = 0.05):
        super().__init__()
        self.backbone = backbone
        width = backbone.config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        self.temperature = temperature

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        cls = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        views = F.normalize(self.mlp(cls), dim=-1)
        first, second = views.chunk(2)  # rows i and i + B are the two dropout views of sentence i
        logits = first @ second.T / self.temperature
        return F.cross_entropy(logits, torch.arange(len(first), device=logits.device))


def tight_step_fn(student_dir: Path, sentences: list[str], precision: str, device: torch.device,
                  compile_with: tuple[str, str | None] | None) -> Callable[[], None]:
    """A closure doing one tight step; the batch is tokenised once, here, onto the device."""
    from transformers import AutoModel, AutoTokenizer

    from distill.run import adamw

    tokens = AutoTokenizer.from_pretrained(str(student_dir))(
        sentences + sentences, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    torch.manual_seed(0)
    model = TightSimCSE(AutoModel.from_pretrained(str(student_dir))).to(device).train()
    optimizer = adamw(model.parameters(), 3e-5, 0.0, device)
    forward = torch.compile(model, backend=compile_with[0], mode=compile_with[1]) if compile_with else model

    def step() -> None:
        with autocast(precision, device):
            loss = forward(ids, mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def st_trainer_step_fn(student_dir: Path, batch: tuple, precision: str, device: torch.device,
                       work: Path) -> "GatedTrainer":
    """sentence-transformers' own distillation recipe (``MSELoss`` to the cached teacher rows of the batch,
    ``SentenceTransformerTrainer`` with its defaults: AdamW, warm-up, gradient clipping, bf16 through its
    own mixed precision) on the same 64 captions, held step by step so it takes turns with the others."""
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from sentence_transformers.sentence_transformer.modules import Dense

    from distill.st_losses import cache_dataset

    cache, rows = batch
    torch.manual_seed(0)
    model = SentenceTransformer(str(student_dir), device=str(device))
    model.max_seq_length = MAX_TOKENS
    width = model.get_sentence_embedding_dimension()
    if width != cache.text_dim:  # a smaller rehearsal student: a linear map to the teacher's width
        model.append(Dense(width, cache.text_dim, activation_function=nn.Identity()).to(device))
    # the 64 captions repeated: its sampler draws batches of them, and an epoch ends only every 200 steps
    dataset = cache_dataset(cache, np.tile(rows, 200))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "st_trainer"), per_device_train_batch_size=len(rows), max_steps=10**6,
        learning_rate=3e-5, warmup_ratio=0.1, bf16=precision == "bf16", save_strategy="no",
        logging_steps=10**6, report_to="none", disable_tqdm=True, use_cpu=device.type == "cpu")
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=MSELoss(model))
    sample = dataset[: len(rows)]
    return GatedTrainer(trainer, sample["sentence"], torch.tensor(sample["label"], device=device))


class GatedTrainer:
    """A Hugging Face trainer running its own ``train()`` loop in a thread, held at the end of every step
    until a call lets it take the next one. A call therefore times one whole step as that loop runs it:
    its loader drawing and collating (tokenising) the batch, forward, backward, clipping, optimiser and
    schedule, with none of the trainer's internals driven from outside."""

    def __init__(self, trainer, sentences: list[str], targets: torch.Tensor):
        from transformers import TrainerCallback

        self.trainer, self.sentences, self.targets = trainer, sentences, targets
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.error: BaseException | None = None
        gate = self

        class Gate(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                gate.go.acquire()

            def on_step_end(self, args, state, control, **kwargs):
                gate.done.release()
                gate.go.acquire()

        trainer.add_callback(Gate())
        threading.Thread(target=self._train, daemon=True).start()  # left held at the end of the run

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as error:  # handed to the caller, which would otherwise wait forever
            self.error = error
        self.done.release()

    def __call__(self) -> None:
        self.go.release()
        self.done.acquire()
        if self.error is not None:
            raise RuntimeError("sentence-transformers' trainer failed") from self.error

    def count_flops(self) -> int:
        """Its model's forward and backward on the batch, counted here: the counter sees only this thread.
        The trainer is held between steps meanwhile; the gradients this leaves are cleared."""
        from sentence_transformers.util import batch_to_device

        model = self.trainer.model
        features = batch_to_device(model.tokenize(self.sentences), self.targets.device)
        flops = count_flops(lambda: F.mse_loss(model(features)["sentence_embedding"], self.targets).backward())
        model.zero_grad(set_to_none=True)
        return flops


def autocast(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# --- measuring --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    name: str
    precision: str
    compiled: bool


def count_flops(run_step: Callable[[], None]) -> int:
    """Matmul + attention FLOPs of one eager step, forward and backward (FlopCounterMode)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run_step()
    return counter.get_total_flops()


def time_interleaved(steps: dict[Config, Callable[[], None]], n_steps: int, warmup: int, device: torch.device
                     ) -> dict[Config, list[float]]:
    """Seconds per step of every configuration, taking turns, after ``warmup`` untimed rounds."""
    times: dict[Config, list[float]] = {config: [] for config in steps}
    for round_index in range(warmup + n_steps):
        for config, run_step in steps.items():
            synchronize(device)
            started = time.perf_counter()
            run_step()
            synchronize(device)
            if round_index >= warmup:
                times[config].append(time.perf_counter() - started)
    return times


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # host sync for timing only, outside the step


# --- the report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    config: Config
    median_ms: float
    tflops: float
    ratio: float


def make_rows(times: dict[Config, list[float]], flops: dict[str, int]) -> list[Row]:
    """Median ms, TFLOP/s (counted FLOPs / median time) and the ratio to SimCSE at the same setting."""
    medians = {config: statistics.median(values) for config, values in times.items()}
    rows = []
    for config, median in medians.items():
        simcse = medians[Config(SIMCSE, config.precision, config.compiled)]
        rows.append(Row(config, median * 1e3, flops[config.name] / median / 1e12, median / simcse))
    return rows


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine() or 'CPU'} ({torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9]+", "-", device_label(device).lower()).strip("-")


def render_report(rows: list[Row], flops: dict[str, int], facts: dict[str, str]) -> str:
    lines = [
        "# Paper-size training step: speed only, RANDOM weights",
        "",
        f"Generated by `{facts['command']}` (do not edit).",
        "",
        "**Weights are random** (student from a `BertConfig`, teacher = random 768-d unit vectors): these",
        "numbers say how fast a step runs, nothing about quality.",
        "",
        f"- device: {facts['device']}; torch {torch.__version__}",
        f"- student: BERT `{facts['size']}` shape ({facts['params']} parameters besides the embeddings), MiniLM uncased WordPiece "
        f"tokenizer, [CLS] pooling + MLP head; batch 64 Flickr30k captions x 2 dropout views, padded to the longest "
        f"({facts['tokens']} tokens, max {MAX_TOKENS})",
        f"- {facts['steps']} timed steps per configuration after {facts['warmup']} warm-up steps, all configurations "
        "taking turns step by step; medians",
        "- FLOPs per step: counted with `torch.utils.flop_counter.FlopCounterMode` over one eager forward + "
        "backward (matmuls and attention only); TFLOP/s = that count / median step time. For comparison, "
        f"6 x non-embedding params x tokens (2 x 64 rows x padded length) = {facts['analytic_tflop']} TFLOP",
        f"- compile: `torch.compile` ({facts['backend']}) of the encoder (project steps) or of the "
        "whole forward (tight loop)",
        "- ratio = median / median of the SimCSE project step at the same precision and compile setting",
        "",
        "| step | precision | compile | median ms | TFLOP/step | TFLOP/s | ratio vs SimCSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row.config.name} | {row.config.precision} | {'yes' if row.config.compiled else 'no'} | "
                     f"{row.median_ms:.3f} | {flops[row.config.name] / 1e12:.6f} | {row.tflops:.6f} | {row.ratio:.3f} |")
    return "\n".join(lines + race_lines(rows)) + "\n"


def race_lines(rows: list[Row]) -> list[str]:
    """The project's default recipe (one-view regression) against sentence-transformers' own recipe, step for
    step on the same batch, eager: the steps/s ratio at each precision."""
    eager = {(row.config.name, row.config.precision): row.median_ms for row in rows if not row.config.compiled}
    lines = ["", "## The default recipe against sentence-transformers' own, per step", "",
             f"Steps/s of `{REGRESSION}` over `{ST_TRAINER}`, both eager, on the same 64 captions and "
             "teacher rows (its sampler draws its batches from them):", ""]
    for (name, precision), ms in eager.items():
        if name == REGRESSION and (ST_TRAINER, precision) in eager:
            lines.append(f"- {precision}: {ms:.3f} ms against {eager[ST_TRAINER, precision]:.3f} ms, "
                         f"**{eager[ST_TRAINER, precision] / ms:.2f}x**")
    return lines


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(BERT_SHAPES), default="base")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration first (compiling)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16", type=_precisions)
    parser.add_argument("--compile", default="inductor", choices=["inductor", "aot_eager", "eager", "none"],
                        help="torch.compile backend for the compiled rows (eager: a quick CPU rehearsal of the "
                             "same code path); 'none' leaves the compiled rows out")
    parser.add_argument("--compile-mode", default=None, choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile mode (reduce-overhead: CUDA graphs where they fit)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="MiniLM tokenizer folder (default: offline package)")
    parser.add_argument("--data-dir", default=None, help="shipped data: wiki1m/ and flickr30k/multi30k (default: resolved)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="default: reports/paper_speed_<device>.md")
    return parser.parse_args(argv)


def _precisions(value: str) -> list[str]:
    chosen = value.split(",")
    if not chosen or set(chosen) - {"fp32", "bf16"}:
        raise argparse.ArgumentTypeError(f"expected fp32, bf16 or fp32,bf16; got {value!r}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="paper_speed_") as scratch:
        work = args.work_dir or Path(scratch)
        report = run(args, device, work)
    out = args.out or ROOT / "reports" / f"paper_speed_{device_slug(device)}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"written to {out}")
    return 0


def run(args: argparse.Namespace, device: torch.device, work: Path) -> str:
    student_dir = save_random_bert(work / "student", args.size, args.tokenizer or minilm_path())
    cache, pools = random_teacher_cache(work, resolve_data_dir(args.data_dir))
    # one fixed batch of 64 random captions: every configuration and step sees the same shapes
    fixed = Step("paired", np.random.default_rng(0).permutation(pools.n_paired)[:64])
    text_rows = pools.paired_text_rows[fixed.rows]
    sentences = [pools.sentences[i] for i in text_rows]
    backend = None if args.compile == "none" else args.compile
    steps = build_steps(args.precisions, (backend, args.compile_mode), student_dir,
                        (cache, pools, fixed, text_rows), device, work)
    flops: dict[str, int] = {}  # counted once per step kind: the same math at every precision and compile setting
    for config, run_step in steps.items():
        if not config.compiled and config.name not in flops:
            flops[config.name] = (run_step.count_flops() if isinstance(run_step, GatedTrainer)
                                  else count_flops(run_step))
    times = time_interleaved(steps, args.steps, args.warmup, device)
    tokens = padded_length(student_dir, sentences)
    params = non_embedding_params(build_encoder(load_config(PAPER_CONFIG, [f"student.model={student_dir}"]).student))
    facts = {
        "command": "python benchmarks/paper_speed.py " + " ".join(sys.argv[1:]),
        "device": device_label(device), "size": args.size, "params": f"{params / 1e6:.1f}M",
        "tokens": str(tokens), "steps": str(args.steps), "warmup": str(args.warmup),
        "backend": f"backend {args.compile}" + (f", mode {args.compile_mode}" if args.compile_mode else ""),
        "analytic_tflop": f"{6 * params * 2 * 64 * tokens / 1e12:.4f}",
    }
    return render_report(make_rows(times, flops), flops, facts)


def build_steps(precisions: list[str], compile_with: tuple[str | None, str | None], student_dir: Path,
                batch: tuple, device: torch.device, work: Path) -> dict[Config, Callable[[], None]]:
    """One closure per configuration; each owns its model and optimiser. ``compile_with`` = (backend or
    None for no compiled rows, mode); ``batch`` = (cache, pools, fixed step, its cache text rows).
    sentence-transformers' trainer step is timed eager only: its ``torch_compile`` compiles the whole model
    inside ``train()``, which this step-by-step timing does not run."""
    cache, pools, fixed, text_rows = batch
    sentences = [pools.sentences[i] for i in text_rows]
    backend, mode = compile_with
    steps: dict[Config, Callable[[], None]] = {}
    for precision in precisions:
        for compiled in ([False, True] if backend else [False]):
            for name, overrides in VARIANTS.items():
                variant = build_project_variant([*overrides, f"train.precision={precision}"], student_dir, cache,
                                                pools, device)
                if compiled:
                    compile_encoder(variant.trainable.student, backend=backend, mode=mode)
                steps[Config(name, precision, compiled)] = project_step_fn(variant, fixed)
            steps[Config(TIGHT, precision, compiled)] = tight_step_fn(student_dir, sentences, precision, device,
                                                                     (backend, mode) if compiled else None)
        steps[Config(ST_TRAINER, precision, False)] = st_trainer_step_fn(student_dir, (cache, text_rows), precision,
                                                                         device, work)
    return steps


def non_embedding_params(encoder: nn.Module) -> int:
    """Parameters that multiply every token (the 6 N T rule counts these): not the embeddings (lookups),
    not the pooler (one token per row)."""
    return sum(p.numel() for name, p in encoder.named_parameters() if "embeddings" not in name and "pooler" not in name)


def padded_length(student_dir: Path, sentences: list[str]) -> int:
    """Tokens per row of the batch once padded to its longest sentence (as the student pads)."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(student_dir))(sentences, padding=True, truncation=True,
                                                           max_length=MAX_TOKENS)["input_ids"]
    return len(ids[0])


if __name__ == "__main__":
    sys.exit(main())
