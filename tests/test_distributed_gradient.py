"""The exact global-batch gradient under DDP: 2 CPU processes (gloo) vs one process on both halves.

Each rank holds half of a paired batch; DDP averages the gradients of the two local losses. With the
student candidates gathered with autograd (distill/gather.py) the average must equal the gradient
of one process that sees the concatenated batch, for the whole objective (text loss, AdapACSE,
same-image + threshold/gist masks, soft-target KL, regression and the related-method modules).
Dropout is off (encoder in eval mode) so both sides compute the same function; fp32 (the AAHR
module builds its state in fp32), so the bound is 1e-5.
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from distill.config import StudentConfig, load_config
from distill.objective import DistillationObjective, StepInputs
from distill.student import Student, build_encoder
from distill.term import Dims
from distill.run import StudentWithObjective

# The related-method modules' settings. DIAS's dimension term (loss.dias.dimension_weight) is left out
# on purpose: it standardises over the *local* batch by design (a per-rank batch statistic,
# distill/terms/dias.py), so no gather can make it equal the concatenated batch's value.
MODULES = {
    "loss.aahr.queue_size": 16, "loss.aahr.prototypes": 2, "loss.aahr.weight": 0.5,
    "loss.aahr.cluster_negative_weight": 0.5, "loss.focal_gamma": 1.0, "loss.soft_mask.weight": 0.5,
    "loss.mmref.weight": 0.5, "loss.dias.dimension_weight": 0, "loss.dias.relation_weight": 0.5,
    "loss.dias.top_k": 3,
}
BASE = {
    "loss.text": "angular", "loss.multimodal": "adapacse", "loss.multimodal_weight": 0.5,
    "loss.same_image_mask": True, "loss.soft_target_weight": 1.0, "loss.regression_weight": 1.0,
    "loss.filter_threshold": 0.3, "loss.gist_margin": 0.05,
}
FILTERS = ("threshold", "gist")
TEXT_DIM, IMAGE_DIM = 12, 10
WORDS = "a man woman dog cat plays guitar runs fast slowly red blue big small car house eats food".split()
IMAGE_IDS = [0, 0, 1, 2, 2, 3, 1, 4]  # same-image pairs inside a rank's half and across the halves


def batch(seed: int, n: int = 8) -> StepInputs:
    g = torch.Generator().manual_seed(seed)
    sentences = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (5,), generator=g)) for _ in range(n)]
    text = F.normalize(torch.randn(n, TEXT_DIM, generator=g, dtype=torch.float32), dim=-1)
    images = F.normalize(torch.randn(max(IMAGE_IDS) + 1, IMAGE_DIM, generator=g, dtype=torch.float32), dim=-1)
    ids = torch.tensor(IMAGE_IDS[:n])
    return StepInputs(sentences, text, images[ids], ids)


def half(inputs: StepInputs, rank: int) -> StepInputs:
    rows = slice(4 * rank, 4 * rank + 4)
    return StepInputs(inputs.sentences[rows], inputs.teacher_text[rows], inputs.teacher_image[rows],
                      inputs.image_ids[rows])


def build(tiny_bert_dir: str, false_negative_filter: str) -> StudentWithObjective:
    overrides = {**BASE, **MODULES, "loss.false_negative_filter": false_negative_filter}
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    student_cfg = StudentConfig(model=tiny_bert_dir, layers=1, grounding_dim=8, mlp_head=True)
    student = Student(build_encoder(student_cfg), student_cfg)
    dims = Dims(student.encoder.get_embedding_dimension(), TEXT_DIM, IMAGE_DIM, student_cfg.grounding_dim)
    objective = DistillationObjective(cfg.loss, dims)
    model = StudentWithObjective(student, objective).train()
    student.encoder.eval()  # dropout off: both sides compute the same function
    return model


def gradients(model: torch.nn.Module, warmup: StepInputs, inputs: StepInputs) -> dict[str, torch.Tensor]:
    """Gradient of one step after a warm-up step that fills the AAHR queue and moves its prototypes."""
    with torch.no_grad():
        model(warmup)
    model(inputs)["loss"].backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, init_file: str, tiny_bert_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = {}
        for name in FILTERS:
            model = DistributedDataParallel(build(tiny_bert_dir, name), find_unused_parameters=True)
            grads = gradients(model, half(batch(1), rank), half(batch(2), rank))
            result[name] = {key.removeprefix("module."): value for key, value in grads.items()}
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_ddp_gradient_equals_the_concatenated_batch(tiny_bert_dir, tmp_path):
    # forked, not spawned: the ranks start with this process's imports instead of importing torch and
    # transformers again each (a spawned rank costs more CPU time than the whole check)
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tiny_bert_dir), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in FILTERS:
        expected = gradients(build(str(tiny_bert_dir), name), batch(1), batch(2))
        assert len(expected) > 20  # encoder, MLP, heads, adapters, regression
        for rank in ranks:
            assert rank[name].keys() == expected.keys()
            for key, grad in expected.items():
                assert grad.abs().max() > 0, key
                diff = (rank[name][key] - grad).abs().max().item()
                assert diff <= 1e-5, f"{name} {key}: max abs diff {diff:.2e}"
