"""Shared builders for the objective-module tests: a tiny student, step inputs, captured views.

The student is the session's random 2-layer BERT (``tiny_bert_dir``) cut to 1 layer; the teacher is
random unit vectors of other widths (so the regression head is a real Linear).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from distill.config import LossConfig, StudentConfig
from distill.objective import DistillationObjective, StepInputs
from distill.student import Student, build_encoder
from distill.term import Dims

STUDENT_DIM, TEACHER_TEXT_DIM, TEACHER_IMAGE_DIM, GROUNDING_DIM = 32, 24, 20, 8  # student: conftest's tiny BERT
SENTENCES = ["a dog runs on the grass", "two men play guitar", "a red car parked near a house",
             "the cat eats food", "a woman rides a blue bike slowly", "children play football"]
IMAGE_IDS = [3, 3, 5, 8, 8, 9]  # two images with two captions each


def make_student(tiny_bert_dir: Path, seed: int = 0) -> Student:
    """The tiny student (its grounding heads are the objective's: ``objective``)."""
    torch.manual_seed(seed)
    cfg = StudentConfig(model=str(tiny_bert_dir), layers=1, grounding_dim=GROUNDING_DIM)
    return Student(build_encoder(cfg), cfg).train()


def make_inputs(paired: bool = True, seed: int = 0, n: int = len(SENTENCES)) -> StepInputs:
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(n, TEACHER_TEXT_DIM, generator=g), dim=-1)
    if not paired:
        return StepInputs(sentences=SENTENCES[:n], teacher_text=text)
    image = F.normalize(torch.randn(n, TEACHER_IMAGE_DIM, generator=g), dim=-1)
    ids = torch.tensor(IMAGE_IDS[:n])
    image = image[torch.unique(ids, return_inverse=True)[1]]  # one vector per image id
    return StepInputs(sentences=SENTENCES[:n], teacher_text=text, teacher_image=image, image_ids=ids)


def run(objective: DistillationObjective, student: Student, inputs: StepInputs, seed: int = 0):
    """One forward with a fixed dropout seed."""
    torch.manual_seed(seed)
    return objective(student, inputs)


@contextmanager
def captured_views(student: Student):
    """Collect every ``student.mlp`` output of the block: in one objective step the first is ``z1``, the
    second ``z2`` (the mlp is Identity here, so they are also ``h1``, ``h2``)."""
    outputs: list[torch.Tensor] = []
    handle = student.mlp.register_forward_hook(lambda m, a, out: outputs.append(out.detach().clone()))
    try:
        yield outputs
    finally:
        handle.remove()


def objective(image_dim: int | None = TEACHER_IMAGE_DIM, **overrides) -> DistillationObjective:
    """The objective of ``LossConfig(**overrides)``, a term's section given as its config dataclass
    (``dias=DIASConfig(...)``); ``image_dim=None``: no image adapter, ``TEACHER_TEXT_DIM``: a CLIP-like
    teacher (one space for captions and images)."""
    sections = {name: asdict(value) for name, value in overrides.items() if is_dataclass(value)}
    shared = {name: value for name, value in overrides.items() if name not in sections}
    return objective_for(LossConfig(**shared, terms=sections), image_dim)


def objective_for(cfg: LossConfig, image_dim: int | None = TEACHER_IMAGE_DIM) -> DistillationObjective:
    """The objective of a loaded ``loss`` section, with the test student's and teacher's widths."""
    return DistillationObjective(cfg, Dims(STUDENT_DIM, TEACHER_TEXT_DIM, image_dim, GROUNDING_DIM))
