"""One rank of test_distributed's noise check (run through torch.distributed.run, CPU, gloo).

A tiny LoRA model trains 3 data-parallel steps under in-place Flat-LoRA, each rank on its own shard
and with its own global RNG state; at step 3 every rank gathers its perturbed weights W + eps and its
adapter. Then SAM-W trains 3 steps on 2 ranks and, as reference, on each rank alone over the full
batches. Rank 0 writes the largest differences (between ranks; SAM: 2 ranks vs 1) to argv[1] (JSON)."""

import json
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

from lorarepro.domain.experiment import DISTRIBUTED as DEFAULTS
from lorarepro.stages.training.ranks import Ranks, accelerator
from lorarepro.stages.training.loop import step_plan, train_steps
from lorarepro.domain.methods.flat import FlatLoRA
from lorarepro.domain.methods.sam import SAM


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x, labels):
        return SimpleNamespace(loss=F.cross_entropy(self.down(torch.tanh(self.up(x))), labels))


def gathered_spread(tensors: list[torch.Tensor], world: int) -> float:
    """max |rank r - rank 0| over the tensors."""
    spread = 0.0
    for t in tensors:
        copies = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(copies, t.detach().contiguous())
        spread = max(spread, *((c - copies[0]).abs().max().item() for c in copies))
    return spread


def tiny_lora():
    torch.manual_seed(1)
    return get_peft_model(Tiny(), LoraConfig(r=2, lora_alpha=4, target_modules=["up", "down"], init_lora_weights=False))


def sam_adapter(ranks, plan, batch_fn, parallel: bool) -> list[torch.Tensor]:
    """The adapter after 3 SAM-W steps, on all ranks together or (reference) on this rank alone."""
    model = tiny_lora()
    sam = SAM(model, rho=0.1, space="weight")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    module = ranks.wrap(model) if parallel else model
    # The reference still meets the other rank in SAM's all-reduce, over identical gradients (a no-op).
    train_steps(module, plan[:3], batch_fn, optimizer, scheduler, hook=sam, ranks=ranks if parallel else None)
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def main(out: str) -> None:
    ranks = Ranks(accelerator({**DEFAULTS, "backend": "gloo", "timeout_minutes": 1}))
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    model = tiny_lora()
    torch.manual_seed(100 + ranks.rank)  # different global RNG per rank: the noise must not depend on it
    module = ranks.wrap(model)
    flat = FlatLoRA(model, rho=0.5, total_steps=4, seed=7, mode="inplace")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    plan = step_plan(40, 10, 2, 1, seed=0)
    batch_fn = lambda idx: {"x": x[idx], "labels": y[idx]}  # noqa: E731
    train_steps(module, plan[:3], batch_fn, optimizer, scheduler, hook=flat, ranks=ranks)
    flat.begin_step(3)  # in-place: the target weights now hold W + eps of step 3
    perturbed = [layer.weight for layer in flat._layers]
    noise = sum(flat.noise(i).abs().sum().item() for i in range(len(perturbed)))
    spread_w = gathered_spread(perturbed, ranks.world)
    flat.end_step()
    spread_lora = gathered_spread([p for p in model.parameters() if p.requires_grad], ranks.world)
    reference = sam_adapter(ranks, plan, batch_fn, parallel=False)
    parallel = sam_adapter(ranks, plan, batch_fn, parallel=True)
    sam_gap = max((a - b).abs().max().item() for a, b in zip(reference, parallel))
    sam_moved = max((a - b).abs().max().item() for a, b in zip(reference, [p.detach() for p in tiny_lora().parameters() if p.requires_grad]))
    if ranks.is_main:
        with open(out, "w") as fh:
            json.dump({"world": ranks.world, "perturbed_spread": spread_w, "adapter_spread": spread_lora,
                       "noise_abs_sum": noise, "sam_gap": sam_gap, "sam_moved": sam_moved}, fh)
    dist.barrier()  # destroy together (see lorarepro.stages.training.ranks.Ranks.close)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
