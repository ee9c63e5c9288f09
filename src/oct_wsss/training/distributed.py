"""Multi-GPU (or multi-process CPU) training under ``torchrun``; one process without it.

``torchrun --nproc_per_node N`` sets RANK, LOCAL_RANK and WORLD_SIZE; :func:`init_distributed` reads them, picks
the device (CUDA ``LOCAL_RANK``, else MPS, else CPU) and joins the process group (nccl on CUDA, gloo otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from oct_wsss.preprocess.device import resolve_device


@dataclass
class Dist:
    """This process's place in the job; with ``world_size == 1`` every method is a cheap no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel when there are several processes (gradients averaged), else itself."""
        if self.world_size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int) -> DistributedSampler | None:
        """A sampler giving each rank its share of ``dataset`` (call ``set_epoch`` each epoch), or None alone."""
        if self.world_size == 1:
            return None
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks (every rank must call it)."""
        if self.world_size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        tdist.all_reduce(t)
        return float(t.item()) / self.world_size

    def broadcast(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module`` (e.g. after a re-initialisation)."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for t in module.state_dict(keep_vars=True).values():
                tdist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            tdist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if self.world_size > 1 and tdist.is_initialized():
            tdist.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device:
        """Where collective tensors must live: the GPU for nccl, the CPU for gloo."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def init_distributed(device: str = "auto") -> Dist:
    """Join the ``torchrun`` job described by the environment, or describe a single process when WORLD_SIZE is unset."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)  # one GPU per process, whatever index was named
        torch.cuda.set_device(resolved)
    elif resolved.type == "mps":
        resolved = torch.device("cpu")  # MPS has no collective backend; several processes share the CPU instead
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Dist(rank, world_size, local_rank, resolved)
