"""Bad inputs get errors that name the argument and the expected shape, for every backend."""

from __future__ import annotations

import pytest
import torch

from ssmamba.ops import check_scan_inputs, selective_scan

BATCH, DIM, LENGTH, STATE = 2, 8, 5, 4


def good_inputs() -> dict[str, torch.Tensor]:
    return dict(
        u=torch.randn(BATCH, DIM, LENGTH),
        delta=torch.rand(BATCH, DIM, LENGTH),
        A=-torch.rand(DIM, STATE),
        B=torch.randn(BATCH, STATE, LENGTH),
        C=torch.randn(BATCH, STATE, LENGTH),
        D=torch.randn(DIM),
        z=torch.randn(BATCH, DIM, LENGTH),
        delta_bias=torch.randn(DIM),
    )


def test_good_inputs_report_sizes():
    shape = check_scan_inputs(**good_inputs())
    assert (shape.batch, shape.dim, shape.length, shape.state, shape.groups) == (BATCH, DIM, LENGTH, STATE, 1)
    grouped = good_inputs() | dict(B=torch.randn(BATCH, 2, STATE, LENGTH), C=torch.randn(BATCH, 2, STATE, LENGTH))
    assert check_scan_inputs(**grouped).groups == 2


@pytest.mark.parametrize(
    "name, bad_shape, expected_text",
    [
        ("u", (BATCH, DIM), "`u` must have shape (batch, dim, length)"),
        ("delta", (BATCH, DIM, LENGTH + 1), f"`delta` must have shape (batch, dim, length) like `u` = ({BATCH}, {DIM}"),
        ("A", (DIM + 1, STATE), f"`A` must have shape (dim, N) = ({DIM}, N)"),
        ("B", (BATCH, STATE + 1, LENGTH), f"`B` must have shape (batch, N, length) = ({BATCH}, {STATE}, {LENGTH})"),
        ("B", (BATCH, 3, STATE, LENGTH), "G = 3 groups, which must divide dim = 8"),
        ("B", (BATCH, STATE), "`B` must have shape (batch, N, length)"),
        ("C", (BATCH, STATE, LENGTH - 1), "`C` must have shape (batch, N, length) like `B`"),
        ("D", (DIM, 1), f"`D` must have shape (dim,) = ({DIM})"),
        ("z", (BATCH, DIM, 1), "`z` must have shape (batch, dim, length) like `u`"),
        ("delta_bias", (DIM + 2,), "`delta_bias` must have shape (dim,)"),
    ],
)
@pytest.mark.parametrize("backend", ["ref", "cpu", "auto"])
def test_wrong_shape_names_argument_and_expected_shape(name, bad_shape, expected_text, backend):
    inputs = good_inputs()
    inputs[name] = torch.randn(*bad_shape)
    with pytest.raises(ValueError) as error:
        selective_scan(**inputs, backend=backend)
    assert expected_text in str(error.value)
    assert str(tuple(bad_shape)).replace(",)", ")") in str(error.value)  # it also says what it got


@pytest.mark.parametrize("name", ["u", "A", "B", "delta_bias"])
def test_non_float_dtype_is_rejected_by_name(name):
    inputs = good_inputs()
    inputs[name] = inputs[name].to(torch.int64)
    with pytest.raises(TypeError, match=f"`{name}` must be a real floating-point tensor.*torch.int64"):
        selective_scan(**inputs, backend="ref")


def test_complex_A_is_rejected():
    inputs = good_inputs()
    inputs["A"] = inputs["A"].to(torch.complex64)
    with pytest.raises(TypeError, match="`A` must be a real floating-point tensor"):
        selective_scan(**inputs)


def test_non_tensor_is_rejected():
    inputs = good_inputs()
    inputs["C"] = inputs["C"].tolist()
    with pytest.raises(TypeError, match="`C` must be a torch.Tensor, got list"):
        selective_scan(**inputs)


def test_mixed_devices_are_rejected():
    inputs = good_inputs()
    inputs["B"] = torch.empty(BATCH, STATE, LENGTH, device="meta")
    with pytest.raises(ValueError, match="`B` is on meta but `u` is on cpu"):
        selective_scan(**inputs)


def test_empty_sequence_is_rejected():
    inputs = {k: v[..., :0] if k in ("u", "delta", "z", "B", "C") else v for k, v in good_inputs().items()}
    with pytest.raises(ValueError, match="sequence length must be at least 1"):
        selective_scan(**inputs)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of 'auto', 'ref', 'cpu', 'cuda'"):
        selective_scan(**good_inputs(), backend="gpu")


def test_cuda_backend_refuses_cpu_tensors():
    with pytest.raises(ValueError, match="'cuda' backend needs CUDA tensors, but `u` is on cpu"):
        selective_scan(**good_inputs(), backend="cuda")
