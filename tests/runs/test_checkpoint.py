"""Checkpoints: round trip of nested state, atomic writes, and no code runs on loading."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from sabma.config import load_config
from sabma.models.registry import build_backbone
from sabma.runs.checkpoint import load_checkpoint, pack, save_checkpoint, unpack
from tests.conftest import PicklePayload


def test_nested_state_round_trips_exactly(tmp_path: Path) -> None:
    state = {
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.randn(3, 2).T}, 1: {"step": torch.tensor(4.0)}},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1], "name": None}],
        },
        "rng": torch.get_rng_state(),
        "flags": [True, False],
        "losses": [1.5, math.inf],
        "empty": torch.zeros(5, 0),
        "long": torch.arange(4),
    }
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert set(loaded["optimizer"]["state"]) == {0, 1}  # int keys kept
    assert torch.equal(
        loaded["optimizer"]["state"][0]["momentum_buffer"],
        state["optimizer"]["state"][0]["momentum_buffer"],
    )
    assert torch.equal(loaded["rng"], state["rng"]) and loaded["rng"].dtype == torch.uint8
    assert loaded["flags"] == [True, False] and loaded["losses"][1] == math.inf
    assert loaded["empty"].shape == (5, 0) and loaded["long"].dtype == torch.int64
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left
    with pytest.raises(TypeError, match="cannot checkpoint a value of type object"):
        pack({"bad": object()})
    tensors, structure = pack({"a": (1, torch.ones(2))})
    assert unpack(structure, tensors)["a"][0] == 1


def test_crafted_pickles_and_yaml_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps(PicklePayload(marker)))
    # a checkpoint is safetensors: a pickle is refused as unreadable
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        load_checkpoint(crafted)
    # weights files go through torch.load(weights_only=True)
    with pytest.raises(
        ValueError,
        match=r"crafted\.pt is not a readable weights file \(it holds "
        r"pickled objects other than tensors; they were not run\)",
    ) as err:
        build_backbone("tiny_cnn", 10, str(crafted))
    assert "weights_only=False" not in str(err.value)
    # configurations go through yaml.safe_load
    config = tmp_path / "evil.yaml"
    config.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises((ValueError, yaml.YAMLError)):
        load_config(config)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"x": torch.randn(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        load_checkpoint(path)
