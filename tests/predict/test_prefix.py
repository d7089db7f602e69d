"""BMA with the frozen prefix run once, and vectorised over samples: equal to the plain loop."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from sabma import GaussianPosterior
from sabma.predict.bma import bma_log_probs
from sabma.predict.prefix import cached_split, split_network
from tests.conftest import TinyResNet

SUBSETS = {
    "head": "head",
    "last block + head": r"^layer1\.(conv2|bn2)\.|^fc\.",
    "norm+head": "norm+head",
}


def _posterior(subset: str, rank: int = 2) -> GaussianPosterior:
    torch.manual_seed(0)
    model = TinyResNet().eval()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    posterior = GaussianPosterior(model, subset, rank=rank, init_std=0.1)
    with torch.no_grad():
        posterior.factor.normal_(std=0.05)
    return posterior.eval()


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("vectorize", [False, True])
def test_cached_and_vectorised_bma_equal_the_loop(subset: str, vectorize: bool) -> None:
    posterior = _posterior(SUBSETS[subset])
    x = torch.randn(6, 1, 8, 8)
    weights = posterior.sample_weights(5).detach()
    looped = torch.stack([torch.log_softmax(posterior.forward_with(w, x), dim=-1) for w in weights])
    looped = torch.logsumexp(looped, 0) - torch.log(torch.tensor(5.0))
    fast = bma_log_probs(posterior, x, weights=weights, vectorize=vectorize)
    torch.testing.assert_close(fast, looped, atol=1e-5, rtol=0)


def test_the_prefix_runs_once_per_batch_with_subset_head() -> None:
    posterior = _posterior("head")
    stem_calls = _count_calls(posterior.model.stem)
    x = torch.randn(4, 1, 8, 8)
    bma_log_probs(posterior, x, samples=7)
    assert stem_calls == [1]
    bma_log_probs(posterior, x, samples=7, cache_prefix=False)
    assert stem_calls == [8]
    split = cached_split(posterior.model, posterior.names)
    assert split is not None and split.suffix_names == ["fc.weight", "fc.bias"]
    assert split.suffix_nodes < 5  # mean, fc (and what feeds them): not the convolutions


def test_last_block_subset_keeps_its_shortcut_in_the_prefix() -> None:
    posterior = _posterior(SUBSETS["last block + head"])
    split = split_network(posterior.model, posterior.names)
    assert split is not None
    shortcut_calls = _count_calls(posterior.model.layer1.downsample)
    conv1_calls = _count_calls(posterior.model.layer1.conv1)
    bma_log_probs(posterior, torch.randn(4, 1, 8, 8), samples=6)
    assert shortcut_calls == [1] and conv1_calls == [1]


def test_training_mode_and_untraceable_networks_fall_back_to_the_loop() -> None:
    posterior = _posterior("head")
    posterior.train()
    assert cached_split(posterior.model, posterior.names) is None
    stem_calls = _count_calls(posterior.model.stem)
    bma_log_probs(posterior, torch.randn(4, 1, 8, 8), samples=3)
    assert stem_calls == [3]

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(3, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = self.body(x)
            if h.sum() > 0:  # data-dependent control flow: not traceable
                h = -h
            return self.fc(h)

    branchy = GaussianPosterior(Branchy(), "head", init_std=0.1).eval()
    assert cached_split(branchy.model, branchy.names) is None
    x = torch.randn(5, 3)
    weights = branchy.sample_weights(4).detach()
    expected = torch.logsumexp(
        torch.stack([torch.log_softmax(branchy.forward_with(w, x), -1) for w in weights]), 0
    ) - torch.log(torch.tensor(4.0))
    torch.testing.assert_close(bma_log_probs(branchy, x, weights=weights), expected)
