"""Data-parallel training under torchrun (gloo, 2 CPU processes): the same weights as one process with the same
global batch, exact resume after a kill, a clear error when the number of processes changes, and gradient
accumulation.

A 2-process run with ``--batch-size B`` is compared with a 1-process run with ``--batch-size B --accum-steps 2``:
process ``r``'s batch is the ``r``-th micro-batch of the single process (the sampler cuts every global batch into
consecutive blocks), BatchNorm normalises over the same ``B`` images in both, and the gradient is the same mean
over ``2B`` images, summed in another order. So the parameters agree to float32 round-off, amplified over a few
AdamW steps (its update divides by the root of the second moment, which magnifies the relative error of small
gradients): ``atol 2e-4`` against updates of ``lr = 1e-3`` per step. BatchNorm's running statistics are not
compared: DDP keeps rank 0's, computed over its own half of each batch. Drop-path is off, because each process
draws its own masks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from ssmamba.train.engine import STATE_NAME, LayoutChangedError, Trainer
from ssmamba.train.finetune import FinetuneConfig, finetune
from ssmamba.train.pretrain import PretrainConfig, pretrain
from ssmamba.train.sampling import EpochSampler, make_loader

TOLERANCE = dict(rtol=0, atol=2e-4)  # see the module docstring

# rank 0 is killed (SIGKILL) as it starts step 4, after the checkpoint of step 3, in the middle of epoch 2;
# torchrun then stops rank 1
_KILL_AT_STEP_4 = """
import os, signal
import ssmamba.train.engine as engine
real = engine.Trainer._train_step
def _train_step(self, batches):
    if self.state.step == 3 and self.job.rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, batches)
engine.Trainer._train_step = _train_step
"""

# each process records how many validation predictions the metrics were computed from
_COUNT_VALIDATION = """
import os
from pathlib import Path
import ssmamba.eval.metrics as metrics
real = metrics.compute_metrics
def compute_metrics(labels, probs, *args, **kwargs):
    with open(Path(os.environ["SSMAMBA_TEST_OUT"]) / f"val_sizes_{os.environ['RANK']}.txt", "a") as f:
        f.write(f"{len(labels)}\\n")
    return real(labels, probs, *args, **kwargs)
metrics.compute_metrics = compute_metrics
"""


def _images(root: Path, n_per_class: int = 12, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for label, dark in (("a", False), ("b", True)):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            if dark:
                image[8:24, 8:24] //= 3
            Image.fromarray(image).save(root / label / f"{i}.png")
    return root


PRETRAIN = dict(model="ssmamba_test", img_size=32, crop_size=32, mask_patch_size=8, epochs=3, batch_size=4,
                checkpoint_every=3, seed=1, hed=False)
FINETUNE = dict(model="ssmamba_test", img_size=32, crop_size=32, epochs=2, batch_size=4, lr=1e-3, seed=0,
                patience=0, hed=False, drop_path=0.0)


def _options(values: dict) -> list[str]:
    def option(name: str, value) -> str:
        name = name.replace("_", "-")
        return f"--{'' if value else 'no-'}{name}" if isinstance(value, bool) else f"--{name}={value}"

    return [option(name, value) for name, value in values.items()]


def _parameters(model_file: Path) -> dict[str, torch.Tensor]:
    """The weights in a safetensors file, without BatchNorm's running statistics."""
    return {k: v for k, v in load_file(str(model_file)).items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _assert_close(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name, **(tolerance or TOLERANCE))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, torchrun):
    """The data, and an uninterrupted 2-process MAMIM pretraining run (3 epochs x 2 steps of 2 x 4 images)."""
    root = tmp_path_factory.mktemp("ddp")
    data = _images(root / "data", n_per_class=8)
    out = root / "straight"
    result = torchrun(root, "pretrain", "--data", data, "--out", out, "--no-progress", *_options(PRETRAIN))
    assert result.returncode == 0, result.stderr[-3000:]
    return data, out, result


def test_two_process_pretraining_writes_one_checkpoint_and_matches_one_process(pretrained, tmp_path):
    data, out, result = pretrained
    assert result.stdout.count("encoder checkpoint:") == 1  # rank 0 alone reports
    log = (out / "log.txt").read_text()
    assert log.count("2 process(es) x 4 images x 1 accumulation step(s) = 8 images per step, 6 steps") == 1
    assert log.count("step 6/6") == 1
    assert sorted(p.name for p in out.glob("reconstruction_*.png")) == [
        f"reconstruction_{s:06d}.png" for s in (3, 6)]
    state = torch.load(out / STATE_NAME, weights_only=True)
    assert state["layout"] == {"world_size": 2, "images_per_step": 8, "steps_per_epoch": 2}
    assert len(state["process_rng"]) == 2 and not torch.equal(*state["process_rng"])

    single = pretrain(PretrainConfig(data=str(data), out=str(tmp_path / "single"), accum_steps=2, **PRETRAIN),
                      progress=False)
    _assert_close(_parameters(out / "checkpoint" / "model.safetensors"),
                  _parameters(single / "model.safetensors"))
    # the decoder too (the whole MAMIM model of the training state)
    reference = torch.load(tmp_path / "single" / STATE_NAME, weights_only=True)
    decoder = [k for k in state["model"] if k.startswith("decoder.")]
    assert decoder
    _assert_close({k: state["model"][k] for k in decoder}, {k: reference["model"][k] for k in decoder})


def test_a_killed_two_process_run_resumes_to_the_same_weights(pretrained, tmp_path, torchrun):
    data, straight, _ = pretrained
    out = tmp_path / "killed"
    args = ["pretrain", "--data", data, "--out", out, "--no-progress", *_options(PRETRAIN)]
    killed = torchrun(tmp_path, *args, prelude=_KILL_AT_STEP_4)
    assert killed.returncode != 0
    assert torch.load(out / STATE_NAME, weights_only=True)["run"]["step"] == 3

    # one process cannot silently continue a 2-process run ...
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    with pytest.raises(LayoutChangedError, match=r"2 process\(es\) with 8 images per step.*1 with 4.*--reshard"):
        pretrain(PretrainConfig(data=str(data), out=str(copy), **PRETRAIN), resume=True, progress=False)
    # ... but it can re-shard: 1 epoch and 1 step of 8 images = 1 epoch and 2 steps of 4, then the 3 epochs end
    pretrain(PretrainConfig(data=str(data), out=str(copy), **PRETRAIN), resume=True, reshard=True, progress=False)
    log = (copy / "log.txt").read_text()
    assert "re-sharded" in log and "continuing at step 6 of 12" in log
    summary = json.loads((copy / "run_state.json").read_text())
    assert summary["step"] == 12 and summary["epoch"] == 3

    resumed = torchrun(tmp_path, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = torch.load(straight / STATE_NAME, weights_only=True), torch.load(out / STATE_NAME, weights_only=True)
    _assert_close(a["model"], b["model"], rtol=0, atol=0)
    assert a["run"]["step"] == b["run"]["step"] == 6


def test_two_process_finetuning_matches_one_process_and_validates_the_whole_split(tmp_path, torchrun):
    data = _images(tmp_path / "data")
    out = tmp_path / "ddp"
    result = torchrun(tmp_path, "finetune", "--data", data, "--out", out, "--no-progress", *_options(FINETUNE),
                      prelude=_COUNT_VALIDATION, env={"SSMAMBA_TEST_OUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best checkpoint:") == 1
    n_val = yaml.safe_load((out / "config.yaml").read_text())["n_val"]
    for rank in (0, 1):  # every process scored every validation image, once per epoch
        assert (tmp_path / f"val_sizes_{rank}.txt").read_text().split() == [str(n_val)] * 2

    single = tmp_path / "single"
    finetune(FinetuneConfig(data=str(data), out=str(single), accum_steps=2, **FINETUNE), progress=False)
    _assert_close(_parameters(out / "last" / "model.safetensors"), _parameters(single / "last" / "model.safetensors"))
    scores = [[row["val_balanced_accuracy"] for row in json.loads((run / "history.json").read_text())
               if "val_balanced_accuracy" in row] for run in (out, single)]
    assert len(scores[0]) == 2 and scores[0] == pytest.approx(scores[1], abs=1e-6)


# ---- the parts, in one process --------------------------------------------------------------------------------
class _Regression(Trainer):
    def compute_loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.train_model(x), y)


def _regression(tmp_path: Path, batch_size: int, accum_steps: int) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(24, 5)
    data = torch.utils.data.TensorDataset(x, x @ torch.randn(5, 2) + 0.1 * torch.randn(24, 2))
    model = torch.nn.Linear(5, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    loader = make_loader(data, batch_size, seed=0, shuffle=True, drop_last=True)
    steps = -(-len(loader) // accum_steps) * 3
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    trainer = _Regression(model, optimizer, scheduler, loader, tmp_path / f"r{batch_size}x{accum_steps}", epochs=3,
                          progress=False, accum_steps=accum_steps)
    trainer.fit()
    assert trainer.state.step == steps
    return torch.cat([model.weight.detach().flatten(), model.bias.detach()])


def test_accumulating_two_batches_equals_one_batch_twice_as_large(tmp_path):
    """Exact for a model without BatchNorm (BatchNorm normalises each micro-batch over its own images, so with it
    accumulation matches the larger batch only approximately, as in every framework)."""
    torch.testing.assert_close(_regression(tmp_path, 4, 2), _regression(tmp_path, 8, 1), rtol=0, atol=1e-6)
    assert not torch.allclose(_regression(tmp_path, 4, 1), _regression(tmp_path, 8, 1), atol=1e-3)


@pytest.mark.parametrize("length,drop_last", [(26, True), (26, False), (5, False)])
def test_the_processes_share_each_global_batch_in_consecutive_blocks(length, drop_last):
    single = EpochSampler(length, seed=3, batch_size=4, drop_last=drop_last)
    ranks = [EpochSampler(length, seed=3, batch_size=4, drop_last=drop_last, rank=r, world_size=2) for r in (0, 1)]
    for sampler in (single, *ranks):
        sampler.set_epoch(2)
    order = single.order()
    parts = [list(sampler) for sampler in ranks]
    assert len(parts[0]) == len(parts[1]) == len(ranks[0]) == len(ranks[1])
    if drop_last:  # 3 global batches of 8: rank r's batch k is single-process batch 2k + r
        batches = [order[i:i + 4] for i in range(0, 24, 4)]
        assert parts[0] == sum(batches[0::2], []) and parts[1] == sum(batches[1::2], [])
    else:  # every sample at least once, the order padded from its start to a multiple of 2
        assert sorted(set(parts[0] + parts[1])) == list(range(length))
        assert len(parts[0] + parts[1]) == length + length % 2
    ranks[1].set_epoch(2, start=2)  # resume: this process's samples after its first two
    assert list(ranks[1]) == parts[1][2:] and len(ranks[1]) == len(parts[1]) - 2


def test_sync_batch_norm_across_cpu_processes_is_refused_clearly(monkeypatch):
    from ssmamba.io import distributed

    monkeypatch.setattr("ssmamba.train.engine.processes", lambda: distributed.Processes(rank=0, world_size=2))
    loader = make_loader(torch.utils.data.TensorDataset(torch.randn(4, 3)), 2, seed=0, shuffle=False)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="--sync-batch-norm needs CUDA GPUs"):
        Trainer(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), loader, Path("."),
                epochs=1, sync_batch_norm=True)


def test_two_nodes_over_loopback_train_like_one_node_with_two_processes(pretrained, tmp_path):
    """The multi-node recipe of the README: two torchrun agents (one process each) meet through a c10d rendezvous
    on 127.0.0.1, and train to the very weights of one agent with two processes."""
    import os
    import socket
    import subprocess
    import sys

    data, straight, _ = pretrained
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "two_nodes"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
         "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
         "--rdzv-id", "loopback", "-m", "ssmamba", "pretrain", "--data", str(data), "--out", str(out),
         "--no-progress", *_options(PRETRAIN)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "2 process(es) x 4 images" in (out / "log.txt").read_text()
    a, b = torch.load(straight / STATE_NAME, weights_only=True), torch.load(out / STATE_NAME, weights_only=True)
    _assert_close(a["model"], b["model"], rtol=0, atol=0)
