"""The posterior's noise: a large CPU draw is cut into pieces with their own generators (drawn on
every core), reproducible from the caller's generator whatever the thread count; smaller draws
are the generator's own ``normal_``."""

from __future__ import annotations

import math

import pytest
import torch

import sabma.posterior.noise as noise
from sabma import GaussianPosterior
from sabma.posterior.noise import NOISE_CHUNKS, standard_normal_


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noise, "PARALLEL_NOISE_MIN", 1000)


def draw(n: int, seed: int, threads: int | None = None) -> torch.Tensor:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return standard_normal_(torch.empty(n), torch.Generator().manual_seed(seed))
    finally:
        torch.set_num_threads(before)


@pytest.mark.usefixtures("small_threshold")
def test_pieces_are_reproducible_on_any_thread_count_and_independent() -> None:
    one, two = draw(10_000, seed=3, threads=1), draw(10_000, seed=3, threads=2)
    assert torch.equal(one, two)
    assert not torch.equal(one, draw(10_000, seed=4))
    pieces = one.chunk(NOISE_CHUNKS)
    # each piece has its own stream: no piece repeats another's draws
    for i in range(NOISE_CHUNKS):
        for j in range(i):
            assert not torch.equal(pieces[i][:100], pieces[j][:100])


@pytest.mark.usefixtures("small_threshold")
def test_the_global_generator_seeds_a_large_draw() -> None:
    torch.manual_seed(7)
    first = standard_normal_(torch.empty(5_000))
    torch.manual_seed(7)
    assert torch.equal(first, standard_normal_(torch.empty(5_000)))


def test_a_large_draw_is_standard_normal() -> None:
    n = noise.PARALLEL_NOISE_MIN + 12_345  # the real threshold: the pieces are taken
    z = draw(n, seed=0).double()
    tolerance = 5.0 / math.sqrt(n)
    assert abs(float(z.mean())) < tolerance
    assert abs(float(z.var()) - 1.0) < 5.0 * math.sqrt(2.0 / n)
    inside = float((z.abs() < 1.0).double().mean())
    assert abs(inside - 0.682689) < 5.0 * math.sqrt(0.682689 * 0.317311 / n)
    # the pieces do not depend on one another: neighbouring draws across a cut are uncorrelated
    pieces = z.chunk(NOISE_CHUNKS)
    m = min(len(p) for p in pieces)
    corr = float(torch.corrcoef(torch.stack([pieces[0][:m], pieces[1][:m]]))[0, 1])
    assert abs(corr) < tolerance * 2


def test_a_small_draw_is_the_generators_own() -> None:
    assert torch.equal(
        draw(999, seed=5), torch.empty(999).normal_(generator=torch.Generator().manual_seed(5))
    )


@pytest.mark.usefixtures("small_threshold")
def test_the_posterior_draws_its_noise_in_pieces() -> None:
    model = torch.nn.Linear(100, 20)
    posterior = GaussianPosterior(model, "all", rank=2)
    torch.manual_seed(1)
    posterior.resample()
    torch.manual_seed(1)
    expected = standard_normal_(torch.empty(posterior.dim))
    assert torch.equal(posterior.noise_diag, expected)
    assert not torch.equal(
        posterior.noise_diag,
        torch.empty(posterior.dim).normal_(generator=torch.Generator().manual_seed(1)),
    )
