"""`resolve_device`: auto picks what exists; asking for a missing GPU fails with a message that says what to do."""

import pytest
import torch

from ssmamba.train.setup import resolve_device


def test_auto_and_explicit_devices():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU; use --device cpu"):
        resolve_device("cuda")


def test_unknown_device_names_are_rejected():
    with pytest.raises(RuntimeError):
        resolve_device("tpu-ish")
