"""Patches of a Trainer subclass's ``compute_loss`` for tests of the shared engine: run code before each loss
(interrupt, count), poison the loss from an epoch on, or record whether it runs under bfloat16 autocast."""

from __future__ import annotations

from collections.abc import Callable

import torch


def before_each_loss(monkeypatch, trainer_cls, hook: Callable) -> None:
    """Call ``hook(trainer)`` before each loss ``trainer_cls`` computes (e.g. raise to interrupt the run)."""
    original = trainer_cls.compute_loss

    def patched(self, batch):
        hook(self)
        return original(self, batch)

    monkeypatch.setattr(trainer_cls, "compute_loss", patched)


def poison_loss_from_epoch(monkeypatch, trainer_cls, epoch: int) -> None:
    """Make every loss of ``trainer_cls`` NaN from ``epoch`` (0-based) on."""
    original = trainer_cls.compute_loss

    def poisoned(self, batch):
        loss = original(self, batch)
        return loss * float("nan") if self.state.epoch >= epoch else loss

    monkeypatch.setattr(trainer_cls, "compute_loss", poisoned)


def record_bf16_autocast(monkeypatch, trainer_cls) -> list[bool]:
    """A list that gets, for each loss ``trainer_cls`` computes, whether CPU bfloat16 autocast was on."""
    seen = []
    before_each_loss(monkeypatch, trainer_cls, lambda _: seen.append(
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16))
    return seen
