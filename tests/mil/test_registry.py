"""MIL heads are registered classes: a new head is one decorated class, built, saved and loaded by its name."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from ssmamba.mil import (MIL_HEADS, MILHead, MILOutput, create_mil_head, load_mil_model, mil_head_class,
                         register_mil_head, save_mil_model)
from ssmamba.mil.abmil import ABMIL
from ssmamba.mil.mamba_mil import MambaMIL
from ssmamba.mil.transmil import TransMIL


def test_the_built_in_heads_are_registered_under_their_names():
    assert MIL_HEADS["abmil"] is ABMIL and MIL_HEADS["transmil"] is TransMIL and MIL_HEADS["mamba_mil"] is MambaMIL
    assert all(cls.head_name == name for name, cls in MIL_HEADS.items())


def test_unknown_names_and_double_registration_are_errors():
    with pytest.raises(ValueError, match="unknown MIL head 'nope'; choose one of abmil"):
        mil_head_class("nope")
    with pytest.raises(ValueError, match="'abmil' is already registered"):
        register_mil_head("abmil")(type("Other", (ABMIL,), {}))
    with pytest.raises(TypeError, match="MILHead subclasses"):
        register_mil_head("module")(nn.Linear)
    assert register_mil_head("abmil")(ABMIL) is ABMIL  # registering the same class again is harmless


def test_a_new_head_is_one_registered_class(tmp_path, monkeypatch):
    monkeypatch.setitem(MIL_HEADS, "mean_pool", None)  # removed again after the test
    del MIL_HEADS["mean_pool"]

    @register_mil_head("mean_pool")
    class MeanPool(MILHead):
        def __init__(self, in_dim: int, num_classes: int) -> None:
            super().__init__(in_dim, num_classes)
            self.classifier = nn.Linear(in_dim, num_classes)

        def _forward_bags(self, features, coords):
            return MILOutput(self.classifier(features.mean(1)), features.norm(dim=-1))

    head = create_mil_head("mean_pool", in_dim=4, num_classes=3)
    assert isinstance(head, MeanPool)
    save_mil_model(head, tmp_path / "head", head_kwargs={}, class_names=["a", "b", "c"])
    loaded, config = load_mil_model(tmp_path / "head")
    assert config["head"] == "mean_pool" and isinstance(loaded, MeanPool)
    bag = torch.randn(6, 4)
    torch.testing.assert_close(loaded(bag), head(bag))


def test_the_builtin_heads_register_on_the_first_lookup_not_on_import():
    """`import ssmamba.mil` imports no torch (so `mil --help` is instant); a registry lookup in a fresh process finds
    every built-in head without the package having imported them."""
    code = ("import sys; import ssmamba.mil, ssmamba.mil.config\n"
            "assert 'torch' not in sys.modules, 'importing ssmamba.mil imported torch'\n"
            "from ssmamba.mil.registry import create_mil_head, head_names\n"
            "print(head_names(), type(create_mil_head('abmil', in_dim=8, num_classes=2)).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['abmil',", "'mamba_mil',", "'transmil']", "ABMIL"]
