"""Run by tests/test_train.py under ``torchrun --nproc_per_node=2``: two CPU processes over gloo.

Each rank starts from *different* random weights (DDP must copy rank 0's to every rank), trains a
tiny U-Net 4 steps straight, then again as 2 steps + checkpoint + resume + 2 steps, and writes a
checksum of its model and EMA weights to OUT/rank{r}.json for the test to compare.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import minidiff as md
from minidiff.train import DiffusionConfig, RunConfig, TrainConfig, Trainer


def checksum(trainer: Trainer) -> str:
    digest = hashlib.sha256()
    for state in (trainer.model.state_dict(), trainer.ema.state_dict()):
        for name, tensor in sorted(state.items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    config = md.UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                           attention_resolutions=(4,), dropout=0.1, num_classes=3, head_dim=8)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (32,), generator=g)
    train = TrainConfig(steps=4, batch_size=4, lr=2e-3, warmup_steps=1, ema_decay=0.9, seed=3)
    diffusion = DiffusionConfig(num_steps=100, p_uncond=0.2)
    run = RunConfig(device="cpu", log_every=1, progress=False)

    torch.manual_seed(100 + rank)
    straight = Trainer(md.UNet(config), images, labels, train, diffusion, run)
    straight.train()

    torch.manual_seed(100 + rank)
    first = Trainer(md.UNet(config), images, labels, train, diffusion, run)
    first.train(2)
    first.save(out / "checkpoint.pt")
    dist.barrier()                      # rank 0 has written the file before anyone reads it
    resumed = Trainer.from_checkpoint(out / "checkpoint.pt", images, labels, run=run)
    resumed.train()

    report = {"world_size": straight.world_size, "batch_seed": straight.batches.initial_seed(),
              "straight": checksum(straight), "resumed": checksum(resumed)}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
