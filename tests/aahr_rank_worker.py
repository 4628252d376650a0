"""Worker of test_modules_aahr's two-rank test, kept light so spawned processes start fast."""
import torch
import torch.distributed as dist
import torch.nn.functional as F

from distill.gather import gather_with_grad
from distill.terms.aahr import AAHR, AAHRConfig


def run(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        aahr = AAHR(AAHRConfig(queue_size=5, prototypes=2, cluster_negative_weight=0.5), student_dim=4, teacher_dim=6,
                    teacher_temperature=0.05)
        for step in range(2):
            g = torch.Generator().manual_seed(10 * step + rank)  # every rank holds different rows
            local_z, local_t = torch.randn(3, 4, generator=g), F.normalize(torch.randn(3, 6, generator=g), dim=-1)
            candidates, offset = gather_with_grad(local_z)
            teacher_all, _ = gather_with_grad(local_t)
            clusters = aahr.assign(teacher_all)
            _, _, weights = aahr.extend(candidates, None, clusters, offset, 3)
            aahr.enqueue(candidates, clusters)
        torch.save({"state": aahr.state_dict(), "weights": weights}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
