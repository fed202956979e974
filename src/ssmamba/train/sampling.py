"""Reproducible data order and augmentation, so that a resumed run continues exactly as an uninterrupted one.

Every sample's augmentation is drawn from a torch RNG seeded by ``(seed, epoch, index)``, independent of workers and
of where a run was interrupted; the order of each epoch is a permutation seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ssmamba.io.distributed import processes

__all__ = ["SeededAugmentation", "EpochSampler", "make_loader"]


class SeededAugmentation(Dataset):
    """Wraps a dataset; item ``i`` of epoch ``e`` is produced under ``torch.manual_seed(f(seed, e, i))``.

    The dataset's transforms must draw their randomness from torch's RNG (torchvision's do).
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only (what the transforms draw from, and what fork_rng restores): torch.manual_seed
            # would also reseed every GPU generator, outside fork_rng, at ~1 ms per call on a machine without one
            torch.default_generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.dataset[index]


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch (or a fixed order), starting ``start`` samples in (for resume).

    Across the ``world_size`` processes of a torchrun job, each global batch (``batch_size`` per process, in the
    epoch's one order) is cut into consecutive blocks, block ``rank`` for process ``rank``: process ``r``'s batch
    ``k`` is the ``(k * world_size + r)``-th batch of the single-process order. So every sample is seen once per
    epoch, the processes together see what one process with ``world_size`` accumulation steps would, and
    ``start`` (in this process's samples) resumes each of them exactly. Without ``drop_last``, the order is padded
    from its beginning to a multiple of ``world_size`` so every process takes the same number of batches.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, weights: torch.Tensor | None = None,
                 batch_size: int = 1, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        self.length, self.seed, self.shuffle, self.weights = length, seed, shuffle, weights
        self.batch_size, self.drop_last, self.rank, self.world_size = batch_size, drop_last, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """The epoch's order of every sample, the same in every process."""
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        if self.weights is not None:  # class-balanced sampling with replacement
            return torch.multinomial(self.weights, self.length, replacement=True, generator=generator).tolist()
        return torch.randperm(self.length, generator=generator).tolist()

    def _layout(self) -> tuple[int, int]:
        """(samples of the epoch after dropping or padding, samples of one global batch)."""
        per_step = self.batch_size * self.world_size
        if self.drop_last:
            return self.length // per_step * per_step, per_step
        return -(-self.length // self.world_size) * self.world_size, per_step

    def rank_order(self) -> list[int]:
        """This process's samples of the epoch, in order."""
        order = self.order()
        if self.world_size == 1:
            return order
        used, per_step = self._layout()
        order = (order * (-(-used // max(1, len(order)))))[:used]  # padded from the start (or cut to full batches)
        mine = []
        for first in range(0, used, per_step):
            chunk = order[first:first + per_step]
            share = len(chunk) // self.world_size
            mine += chunk[self.rank * share:(self.rank + 1) * share]
        return mine

    def __iter__(self):
        return iter(self.rank_order()[self.start:])

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.length - self.start
        used, per_step = self._layout()
        return used // per_step * self.batch_size + used % per_step // self.world_size - self.start


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool, num_workers: int = 0,
                weights: torch.Tensor | None = None, drop_last: bool = False) -> DataLoader:
    """A loader over ``SeededAugmentation(dataset)`` with an :class:`EpochSampler` (this process's share when
    torchrun started several: ``batch_size`` is per process); call ``set_epoch(loader, epoch, start_batch)`` before
    iterating."""
    job = processes()
    sampler = EpochSampler(len(dataset), seed, shuffle, weights, batch_size=batch_size, drop_last=drop_last,
                           rank=job.rank, world_size=job.world_size)
    return DataLoader(SeededAugmentation(dataset, seed), batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, drop_last=drop_last, persistent_workers=False,
                      # its own generator: creating an iterator must not draw from the global RNG, which the
                      # model's dropout uses and a resumed run restores
                      generator=torch.Generator().manual_seed(seed))


def set_epoch(loader: DataLoader, epoch: int, start_batch: int = 0) -> None:
    loader.dataset.epoch = epoch
    loader.sampler.set_epoch(epoch, start_batch * loader.batch_size)
