"""Multi-GPU (or multi-process CPU) training under ``torchrun``; one process without it.

``torchrun --nproc_per_node N`` sets RANK, LOCAL_RANK and WORLD_SIZE; :func:`init_distributed` reads them, picks
the device (CUDA ``LOCAL_RANK``, else MPS, else CPU) and joins the process group (nccl on CUDA, gloo otherwise).
Whoever joins the group leaves it: a trainer called inside ``oct-wsss train`` shares the recipe's group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from oct_wsss.preprocess.device import resolve_device
from oct_wsss.training.errors import TrainingError


@dataclass
class Dist:
    """This process's place in the job; with ``world_size == 1`` every method is a cheap no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns: bool = False  # this Dist joined the process group, so its close() leaves it

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

    def loader(self, dataset: Dataset, batch_size: int, *, seed: int, epoch: int,
               generator: torch.Generator | None = None, **kwargs: Any) -> DataLoader:
        """Epoch ``epoch``'s shuffled batches of this rank's share (all of ``dataset`` alone, shuffled by ``generator``,
        by default seeded from ``seed`` and ``epoch``); a last short batch is dropped when a full one exists."""
        sampler = self.sampler(dataset, shuffle=True, seed=seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
        size = len(dataset) if sampler is None else sampler.num_samples
        return DataLoader(dataset, batch_size, shuffle=sampler is None, sampler=sampler, drop_last=size > batch_size,
                          generator=generator or torch.Generator().manual_seed(seed * 1000 + epoch), **kwargs)

    def shard(self, n: int, *, seed: int, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """Epoch ``epoch``'s shuffled indices of ``n`` items: all of them alone (from ``generator``), else this rank's
        share (every rank gets as many)."""
        sampler = self.sampler(range(n), shuffle=True, seed=seed)
        if sampler is None:
            return torch.randperm(n, generator=generator)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler))

    def main_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` on rank 0, a no-op on the other ranks."""
        return log if self.is_main else (lambda _msg: None)

    def cancelled(self, cancel: Callable[[], bool] | None) -> bool:
        """True on every rank when ``cancel()`` says so on any (every rank must call it)."""
        return cancel is not None and self.mean(float(bool(cancel()))) > 0

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable) on every rank."""
        if self.world_size == 1:
            return value
        box = [value]
        tdist.broadcast_object_list(box, src=0, device=self._comm_device)
        return box[0]

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

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm statistics, which each rank updates from its own batches) everywhere."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for t in module.buffers():
                tdist.broadcast(t, src=0)

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            tdist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self) -> None:
        """Leave the process group if this Dist joined it (idempotent)."""
        if self.owns and self.world_size > 1 and tdist.is_initialized():
            tdist.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device:
        """Where collective tensors must live: the GPU for nccl, the CPU for gloo."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def init_distributed(device: str | torch.device = "auto") -> Dist:
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
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Dist(rank, world_size, local_rank, resolved, owns)


@contextmanager
def distributed(device: str | torch.device = "auto") -> Iterator[Dist]:
    """:func:`init_distributed` for a ``with`` block, leaving the group at its end if the block joined it; a device
    that is not available is a :class:`TrainingError`."""
    try:
        dist = init_distributed(device)
    except ValueError as err:
        raise TrainingError(str(err)) from err
    try:
        yield dist
    finally:
        dist.close()


def main_process() -> bool:
    """Whether this is rank 0 of a ``torchrun`` job (or no job at all): the process that writes results."""
    return int(os.environ.get("RANK", "0")) == 0
