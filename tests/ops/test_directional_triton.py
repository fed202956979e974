"""The in-place Triton directional scan against the reference without a GPU: Triton's interpreter
(``TRITON_INTERPRET=1``, set before the kernels are defined, hence a fresh process) runs it on CPU tensors, outputs
and every gradient. On a GPU, test_scan_cuda.py runs it compiled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

# Checkpoints every 8 steps here, so grids of 12-16 tokens take two chunks (the second one partial). The DMS layout
# (channels at stride 1, Δ, B and C as views of one projection) unless "contiguous"; several channel blocks
# (E = 64 at N = 16: two blocks of 32) and blocks inside groups (M = 2); a group of 24 channels (blocks of 8).
CASES = [
    dict(batch=2, directions=["row", "row_reverse"], channels=16, height=3, width=5, state=16),
    dict(batch=2, directions=["row", "row_reverse", "column", "column_reverse"], channels=8, height=4, width=4,
         state=4, groups=2, scalar=True),
    dict(batch=1, directions=["column", "row"], channels=12, height=5, width=3, state=5, softplus=False, D=False,
         bias=False),
    dict(batch=2, directions=["diagonal", "diagonal_reverse"], channels=16, height=3, width=4, state=8, scalar=True,
         dtype="bfloat16"),
    dict(batch=1, directions=["row_reverse", "column_reverse"], channels=64, height=2, width=3, state=16, groups=2),
    dict(batch=2, directions=["row"], channels=24, height=1, width=7, state=16, contiguous=True),
    dict(batch=1, directions=["column"], channels=8, height=1, width=1, state=2),
]
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from ssmamba.ops import directional_triton
    from ssmamba.ops.directional import directional_scan_ref

    directional_triton.CHUNK = 8

    def problem(batch, directions, channels, height, width, state, groups=1, scalar=False, softplus=True, D=True,
                bias=True, dtype="float32", contiguous=False):
        g = torch.Generator().manual_seed(0)
        k, length, dtype = len(directions), height * width, getattr(torch, dtype)
        u = torch.randn(batch, length, channels, generator=g).to(dtype).transpose(1, 2)
        delta = (torch.randn(k, batch, length, channels, generator=g) * 0.5 - 1).to(dtype).permute(1, 0, 3, 2)
        bc = torch.randn(batch, length, k * groups, 2 * state, generator=g).to(dtype)
        B, C = bc[..., :state].permute(0, 2, 3, 1), bc[..., state:].permute(0, 2, 3, 1)
        if contiguous:
            u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        A = -torch.exp(torch.randn(k, channels, 1 if scalar else state, generator=g) * 0.5)
        Dv = torch.randn(k, channels, generator=g) if D else None
        bias_v = torch.randn(k, channels, generator=g) * 0.1 if bias else None
        kwargs = dict(delta_softplus=softplus, directions=directions, height=height, width=width)
        return [u, delta, A, B, C, Dv, bias_v], kwargs

    def outputs_and_grads(fn, inputs, kwargs):
        leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
        out = fn(*leaves, **kwargs)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype))
        names = ["du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"]
        return {"out": out, **{n: t.grad for n, t in zip(names, leaves) if t is not None}}

    def relative_error(a, b):
        return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()

    results = []
    for case in json.loads(sys.argv[1]):
        inputs, kwargs = problem(**case)
        actual = outputs_and_grads(directional_triton.directional_scan_triton, inputs, kwargs)
        reference = [None if t is None else t.float() for t in inputs]  # the bf16 values, exactly, in float32
        expected = outputs_and_grads(directional_scan_ref, reference, kwargs)
        errors = {name: relative_error(actual[name], expected[name]) for name in expected}
        dtypes = {name: str(actual[name].dtype) for name in actual}
        results.append({"errors": errors, "dtypes": dtypes, "out_stride": list(actual["out"].stride())})
    print(json.dumps(results))
    """
)


def test_interpreted_directional_kernels_match_ref():
    env = os.environ | {"TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for case, got in zip(CASES, json.loads(result.stdout.strip().splitlines()[-1])):
        errors = got["errors"]
        expected_grads = {"du", "ddelta", "dA", "dB", "dC"} | ({"dD"} if case.get("D", True) else set()) | (
            {"ddelta_bias"} if case.get("bias", True) else set())  # fmt: skip
        assert set(errors) == {"out"} | expected_grads, case
        bf16 = case.get("dtype") == "bfloat16"
        # bf16: the output and the storage-dtype gradients are rounded to bf16 (8 bits); A, D, Δ bias stay float32
        assert max(errors.values()) <= (1e-2 if bf16 else 1e-5), (case, errors)
        storage = "torch.bfloat16" if bf16 else "torch.float32"
        assert all(got["dtypes"][n] == storage for n in ("out", "du", "ddelta", "dB", "dC")), got["dtypes"]
        assert got["dtypes"]["dA"] == "torch.float32"
        assert got["out_stride"][1] == 1, "the output keeps channels at stride 1 (u's layout in the mixer)"


@pytest.mark.parametrize("optional_terms", [True, False], ids=["D-bias-softplus", "none"])
@pytest.mark.parametrize("kernel", ["_directional_forward_kernel", "_directional_backward_kernel"])
def test_kernels_compile_for_a_gpu_without_one(kernel, optional_terms):
    """Triton compiles the kernels to a Hopper (sm_90) binary on this machine: the interpreter above does not see
    what only the compiler rejects (types, constexpr branches, scalar loads)."""
    from triton.backends import backends
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    from ssmamba.ops import directional_triton

    if "nvidia" not in backends:
        pytest.skip("this Triton has no CUDA backend")

    fn = getattr(directional_triton, kernel)
    constants = dict(HAS_D=optional_terms, HAS_BIAS=optional_terms, SOFTPLUS=optional_terms, CHUNK=64, BLOCK_D=32,
                     BLOCK_N=16)  # fmt: skip
    bf16 = {"u_ptr", "dl_ptr", "B_ptr", "C_ptr", "dy_ptr"}
    signature = {name: "constexpr" if name in constants else "*i64" if name == "order_ptr" else
                 "*bf16" if name in bf16 else "*fp32" if name.endswith("_ptr") else "i64"
                 for name in fn.arg_names}  # fmt: skip
    source = ASTSource(fn=fn, signature=signature, constexprs=constants)
    binary = triton_compile(source, target=GPUTarget("cuda", 90, 32))
    assert len(binary.asm["cubin"]) > 1000
