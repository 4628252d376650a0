"""gather_with_grad on 2 CPU processes (gloo): values, positive_offset, and the gradient every rank's
loss sends to a rank's rows (summed over ranks); tensors without requires_grad are gathered as constants."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distill.gather import gather_with_grad

SIZES = (2, 3)  # ranks may hold different batch sizes


def _local(rank):
    return (10.0 * rank + torch.arange(SIZES[rank] * 2, dtype=torch.float32)).reshape(-1, 2)


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x = _local(rank).requires_grad_()
        gathered, offset = gather_with_grad(x)
        coeff = (torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape) + 1) * (rank + 1)
        (gathered * coeff).sum().backward()
        ids, _ = gather_with_grad(torch.tensor([100 + rank] * SIZES[rank]))  # int tensors work too
        torch.save({"gathered": gathered.detach(), "offset": offset, "grad": x.grad, "coeff": coeff,
                    "ids": ids}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes (forked: a spawned one would spend seconds importing torch again)
def test_gather_with_grad_two_processes(tmp_path):
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    expected = torch.cat([_local(0), _local(1)])
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(out["gathered"], expected)
        assert out["offset"] == sum(SIZES[:rank])
        local = slice(out["offset"], out["offset"] + SIZES[rank])
        # rank r's loss is sum(gathered * coeff_r) with coeff_r = (r + 1) * base, so
        # d(sum_r loss_r)/dx = (1 + 2) * base on this rank's rows
        assert torch.equal(out["grad"], 3 * out["coeff"][local] / (rank + 1))
        assert out["ids"].tolist() == [100, 100, 101, 101, 101]


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    gathered, offset = gather_with_grad(x)
    assert gathered is x and offset == 0
