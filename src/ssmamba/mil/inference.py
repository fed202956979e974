"""Inference of a MIL head on bags: every bag whole, streamed in chunks (``MILHead.predict_bag``), and the
predictions written as a CSV. Used for validation during training and for every evaluation of a saved head."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ssmamba.io.distributed import gather_list, shard
from ssmamba.mil.bags import BagDataset
from ssmamba.mil.base import MILHead

__all__ = ["BagPredictions", "predict", "torch_threads"]


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with ``count`` torch CPU threads (None: unchanged), then restore the previous count."""
    if count is not None and count < 1:
        raise ValueError(f"threads must be >= 1, got {count}")
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class BagPredictions:
    """Predictions on a set of bags: ids, true labels (n,), class probabilities (n, C), per-tile attention."""

    slide_ids: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    attention: list[np.ndarray] = field(repr=False)

    def write_csv(self, path: str | Path, class_names: list[str]) -> None:
        """``slide_id,label,prediction,prob_<class>...`` with class names, one row per bag."""
        lines = ["slide_id,label,prediction," + ",".join(f"prob_{name}" for name in class_names)]
        for slide_id, label, probs in zip(self.slide_ids, self.y_true, self.probs):
            lines.append(f"{slide_id},{class_names[int(label)]},{class_names[int(np.argmax(probs))]},"
                         + ",".join(f"{p:.6f}" for p in probs))
        Path(path).write_text("\n".join(lines) + "\n")

    def loss(self) -> float:
        """Mean negative log-likelihood of the true labels (probabilities floored at 1e-12)."""
        probs = torch.from_numpy(self.probs).clamp_min(1e-12)
        return float(torch.nn.functional.nll_loss(probs.log(), torch.from_numpy(self.y_true)).item())


@torch.no_grad()
def predict(head: MILHead, dataset: BagDataset, chunk_size: int = 4096, device: str | torch.device = "cpu",
            threads: int | None = None, progress: bool = False, across_processes: bool = False) -> BagPredictions:
    """Class probabilities and attention for every bag, each bag whole (streamed ``chunk_size`` tiles at a time).

    ``threads``: torch CPU threads (None: torch's setting); ``progress``: a progress bar over the bags.
    ``across_processes``: under torchrun, each process scores its share of the bags (every process must call this)
    and every process gets the predictions of all of them, in order: the same as one process computes alone.
    """
    indices = shard(len(dataset)) if across_processes else range(len(dataset))
    with torch_threads(threads):
        head.to(device).eval()
        rows = []
        for index in tqdm(indices, desc="bags", unit="bag", disable=not progress, leave=False):
            features, coords, label = dataset[index]
            out = head.predict_bag(features, coords, chunk_size=chunk_size)
            rows.append((torch.softmax(out.logits.float(), dim=-1)[0].cpu().numpy(),
                         out.attention[0].float().cpu().numpy(), label))
    if across_processes:
        rows = gather_list(rows)
    probs, attention, labels = zip(*rows) if rows else ((), (), ())
    return BagPredictions([r.slide_id for r in dataset.records], np.asarray(labels, dtype=np.int64),
                          np.stack(probs), list(attention))
