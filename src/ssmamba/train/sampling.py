"""Reproducible data order and augmentation, so that a resumed run continues exactly as an uninterrupted one.

Every sample's augmentation is drawn from a torch RNG seeded by ``(seed, epoch, index)``, independent of workers and
of where a run was interrupted; the order of each epoch is a permutation seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.dataset[index]


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch (or a fixed order), starting ``start`` samples in (for resume)."""

    def __init__(self, length: int, seed: int, shuffle: bool = True, weights: torch.Tensor | None = None):
        self.length, self.seed, self.shuffle, self.weights = length, seed, shuffle, weights
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        if self.weights is not None:  # class-balanced sampling with replacement
            return torch.multinomial(self.weights, self.length, replacement=True, generator=generator).tolist()
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self):
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return self.length - self.start


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool, num_workers: int = 0,
                weights: torch.Tensor | None = None, drop_last: bool = False) -> DataLoader:
    """A loader over ``SeededAugmentation(dataset)`` with an :class:`EpochSampler`; call
    ``set_epoch(loader, epoch, start_batch)`` before iterating."""
    sampler = EpochSampler(len(dataset), seed, shuffle, weights)
    return DataLoader(SeededAugmentation(dataset, seed), batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, drop_last=drop_last, persistent_workers=False,
                      # its own generator: creating an iterator must not draw from the global RNG, which the
                      # model's dropout uses and a resumed run restores
                      generator=torch.Generator().manual_seed(seed))


def set_epoch(loader: DataLoader, epoch: int, start_batch: int = 0) -> None:
    loader.dataset.epoch = epoch
    loader.sampler.set_epoch(epoch, start_batch * loader.batch_size)
