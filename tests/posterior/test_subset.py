"""Selecting the Bayesian subset: by module type, the head found or named, errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sabma import select_parameters
from sabma.posterior.subset import find_head
from tests.conftest import TinyResNet


def test_norm_plus_head_on_resnet_includes_downsample_batchnorms() -> None:
    model = TinyResNet()
    names = select_parameters(model, "norm+head")
    expected = []
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            expected += [f"{mod_name}.weight", f"{mod_name}.bias"]
    expected += ["fc.weight", "fc.bias"]
    assert sorted(names) == sorted(expected)
    assert "layer1.downsample.1.weight" in names and "layer1.downsample.1.bias" in names
    # ordered as model.named_parameters()
    order = [n for n, _ in model.named_parameters()]
    assert names == sorted(names, key=order.index)


class TinyTransformer(nn.Module):
    """Embedding, one encoder layer (LayerNorms inside), final LayerNorm, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.final_norm = nn.LayerNorm(16)
        self.classifier = nn.Linear(16, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.final_norm(self.encoder(self.embed(tokens))).mean(1))


def test_norm_plus_head_on_transformer_takes_every_layernorm() -> None:
    names = select_parameters(TinyTransformer(), "norm+head")
    assert set(names) == {
        "encoder.norm1.weight",
        "encoder.norm1.bias",
        "encoder.norm2.weight",
        "encoder.norm2.bias",
        "final_norm.weight",
        "final_norm.bias",
        "classifier.weight",
        "classifier.bias",
    }


class HeadFirst(nn.Module):
    """The classifier is registered first; an auxiliary projection is the last nn.Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Linear(4, 3)
        self.body = nn.Sequential(nn.Linear(5, 4), nn.GroupNorm(2, 4))
        self.aux_proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.body(x))


def test_head_given_by_name_or_module_when_not_last() -> None:
    model = HeadFirst()
    assert select_parameters(model, "head") == ["aux_proj.weight", "aux_proj.bias"]  # fallback
    assert select_parameters(model, "head", head="cls") == ["cls.weight", "cls.bias"]
    assert select_parameters(model, "head", head=model.cls) == ["cls.weight", "cls.bias"]
    assert select_parameters(model, "norm+head", head="cls") == [
        "cls.weight",
        "cls.bias",
        "body.1.weight",
        "body.1.bias",
    ]


def test_classifier_accessors_are_used() -> None:
    class TimmLike(HeadFirst):
        def get_classifier(self) -> nn.Module:
            return self.cls

    class HuggingFaceLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = nn.Linear(4, 2)
            self.pooler = nn.Linear(4, 4)

    assert find_head(TimmLike())[0] == "cls"
    assert find_head(HuggingFaceLike())[0] == "classifier"


def test_all_regex_and_callable_subsets() -> None:
    model = HeadFirst()
    every = [n for n, _ in model.named_parameters()]
    assert select_parameters(model, "all") == every
    assert select_parameters(model, r"\.bias$") == [n for n in every if n.endswith(".bias")]
    assert select_parameters(model, re.compile("^body")) == [
        n for n in every if n.startswith("body")
    ]
    assert select_parameters(model, lambda n, p: p.dim() == 2) == [
        "cls.weight",
        "body.0.weight",
        "aux_proj.weight",
    ]
    assert select_parameters(model, "norm") == ["body.1.weight", "body.1.bias"]


def test_empty_or_bad_subsets_are_errors() -> None:
    with pytest.raises(ValueError, match="matched no parameters"):
        select_parameters(HeadFirst(), "^nothing")
    with pytest.raises(ValueError, match="matched no parameters"):
        select_parameters(nn.Sequential(nn.Linear(2, 2)), "norm")
    with pytest.raises(ValueError, match="nor a valid regular expression"):
        select_parameters(HeadFirst(), "(unclosed")
    with pytest.raises(ValueError, match="is not a module"):
        select_parameters(HeadFirst(), "head", head="nope")
    with pytest.raises(ValueError, match="could not find a classification head"):
        select_parameters(nn.Sequential(nn.Conv2d(1, 2, 3)), "head")
