"""The Fisher blocks of a low-rank Gaussian, checked against the Hessian of the KL.

The Fisher information of q_θ is the Hessian of ε ↦ KL(q_{θ+ε} ‖ q_θ) at ε = 0, computed here by
autograd on the closed-form KL in float64: an independent route to every block.
"""

from __future__ import annotations

import math

import pytest
import torch

from sabma.posterior.lowrank import LowRankGaussian, kl_divergence
from sabma.step.fisher import exact_kl_step, kl_root, natural_direction, shift_kl, shifted

D, K = 4, 2


def theta(seed: int, factor_scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    log_std = 0.3 * torch.randn(D, generator=g, dtype=torch.float64) - 0.5
    factor = factor_scale * torch.randn(D, K, generator=g, dtype=torch.float64)
    return mean, log_std, factor


def gaussian(mean: torch.Tensor, log_std: torch.Tensor, factor: torch.Tensor) -> LowRankGaussian:
    return LowRankGaussian(mean, torch.exp(2 * log_std), factor)


def fisher_by_autograd(
    mean: torch.Tensor, log_std: torch.Tensor, factor: torch.Tensor
) -> torch.Tensor:
    base = gaussian(mean, log_std, factor)

    def kl(flat: torch.Tensor) -> torch.Tensor:
        m, s, f = flat[:D], flat[D : 2 * D], flat[2 * D :].view(D, K)
        return kl_divergence(gaussian(mean + m, log_std + s, factor + f), base)

    return torch.autograd.functional.hessian(kl, torch.zeros(2 * D + D * K, dtype=torch.float64))


def test_mean_block_is_the_precision_and_cross_blocks_vanish() -> None:
    mean, log_std, factor = theta(0)
    fisher = fisher_by_autograd(mean, log_std, factor)
    q = gaussian(mean, log_std, factor)
    precision = q.precision_matvec(torch.eye(D, dtype=torch.float64))
    torch.testing.assert_close(fisher[:D, :D], precision)
    torch.testing.assert_close(fisher[:D, D:], torch.zeros(D, D + D * K, dtype=torch.float64))
    g = torch.randn(D, dtype=torch.float64)
    # natural direction of the mean block solves F_μμ v = g exactly
    torch.testing.assert_close(
        natural_direction(q, {"mean": g})["mean"], torch.linalg.solve(fisher[:D, :D], g)
    )


@pytest.mark.parametrize("factor_scale", [0.0, 0.5])
def test_log_std_and_factor_blocks_match_the_hessian_diagonal(factor_scale: float) -> None:
    mean, log_std, factor = theta(1, factor_scale)
    fisher = fisher_by_autograd(mean, log_std, factor)
    q = gaussian(mean, log_std, factor)
    ones_s = torch.ones(D, dtype=torch.float64)
    ones_d = torch.ones(D, K, dtype=torch.float64)
    damping = 1e-9
    direction = natural_direction(q, {"log_std": ones_s, "factor": ones_d}, damping)
    torch.testing.assert_close(1 / direction["log_std"], torch.diagonal(fisher)[D : 2 * D])
    expected_d = torch.diagonal(fisher)[2 * D :].view(D, K) + damping * q.precision_diag()[:, None]
    torch.testing.assert_close(1 / direction["factor"], expected_d)
    if factor_scale == 0.0:  # Σ is quadratic in D: its Fisher block vanishes at D = 0
        assert torch.diagonal(fisher)[2 * D :].abs().max() < 1e-12
        torch.testing.assert_close(1 / direction["log_std"], 2 * ones_s)


@pytest.mark.parametrize("factor_scale", [0.0, 0.5])
def test_exact_kl_step_hits_the_target(factor_scale: float) -> None:
    mean, log_std, factor = theta(2, factor_scale)
    q = gaussian(mean, log_std, factor)
    v = {
        "mean": torch.randn(D, dtype=torch.float64),
        "log_std": torch.randn(D, dtype=torch.float64),
        "factor": torch.randn(D, K, dtype=torch.float64),
    }
    for target in (1e-6, 1e-3, 0.5):
        for guess in (1e-8, 1.0, 1e3):  # far too small or too large
            t = exact_kl_step(q, log_std, v, target, guess)
            kl = float(kl_divergence(shifted(q, log_std, v, t), q))
            assert kl == pytest.approx(target, rel=1e-3)


@pytest.mark.parametrize("factor_scale", [0.0, 0.5])
@pytest.mark.parametrize("blocks", [("mean", "log_std"), ("log_std",), ("mean",)])
def test_shift_kl_is_the_closed_form_kl_along_mean_and_log_std(factor_scale, blocks) -> None:
    """The one-pass KL along a direction of μ and log σ (D fixed) equals the general closed form
    at every step length, and the step found from it hits the target like the general one."""
    mean, log_std, factor = theta(3, factor_scale)
    q = gaussian(mean, log_std, factor)
    v = {b: torch.randn(D, dtype=torch.float64) for b in blocks}
    kl_at = shift_kl(q, v)
    for t in (1e-6, 1e-3, 0.1, 1.0, 3.0):
        expected = float(kl_divergence(shifted(q, log_std, v, t), q))
        # the moments' series is cut where its remainder is ~10⁻⁹ of the KL (the root: 10⁻⁴)
        assert kl_at(t) == pytest.approx(expected, rel=1e-8, abs=1e-15)
    for target in (1e-6, 1e-3, 0.5):
        for guess in (1e-8, 1.0, 1e3):
            t = exact_kl_step(q, log_std, v, target, guess)
            kl = float(kl_divergence(shifted(q, log_std, v, t), q))
            assert kl == pytest.approx(target, rel=1e-3)


@pytest.mark.parametrize("guess", [1e-8, 1e-3, 1.0, 30.0])
def test_kl_root_needs_few_evaluations_of_the_kl(guess: float) -> None:
    """Each evaluation of the exact KL is a pass over D: the root is found in a few of them
    (secant steps in log–log, where a KL growing like t² or like e^{t} is nearly straight), not
    in the ~20 a bisection to 10⁻⁴ would take."""
    for kl in (lambda t: t * t, lambda t: math.expm1(min(t, 700.0)) - t + 0.1 * t * t):
        calls: list[float] = []

        def counted(t: float, kl=kl, calls=calls) -> float:
            calls.append(t)
            return kl(t)

        t = kl_root(counted, 0.5, guess, 1e-4, 200)
        assert kl(t) == pytest.approx(0.5, rel=1e-4)
        assert len(calls) <= 8, len(calls)


def test_kl_root_survives_a_kl_that_jumps_across_the_target() -> None:
    """A KL so steep that no t hits the target within the tolerance (seen on LoRA adapters:
    two evaluations at one t): the root search stops at the jump, without dividing by zero."""
    calls: list[float] = []

    def steep(t: float) -> float:
        calls.append(t)
        return 1e-30 * t * t if t < 1.0 else 1e30 * t * t

    for guess in (1e-3, 0.7, 1.0, 5.0):
        calls.clear()
        t = kl_root(steep, 0.5, guess, 1e-4, 200)
        assert t == pytest.approx(1.0, rel=1e-9)
        assert len(calls) < 200


@pytest.mark.parametrize("small_moves", ["far", "few_leveraged", "thinly_leveraged"])
def test_shift_kl_in_float32_moves_few_coordinates_exactly_and_the_rest_by_moments(
    monkeypatch: pytest.MonkeyPatch, small_moves: str
) -> None:
    """The posterior's own case: float32, d in the thousands, most log σ moving little and a
    few (where D carries the variance) moving far. The KL along the direction matches the
    float64 closed form, and the evaluations of one root search share one pass over D. With an
    ``atol``, none reads D where the bound on the small coordinates' share holds: also where D's
    leverage sits on a few coordinates that move a little (ℓ > 10⁻³: they enter exactly); one
    does where it is spread thinly over the many that move a little (the bound fails there)."""
    g = torch.Generator().manual_seed(7)
    d, k = 4000, 3
    mean = torch.randn(d, generator=g)
    log_std = 0.3 * torch.randn(d, generator=g) - 2.0
    factor = 0.2 * torch.randn(d, k, generator=g)
    factor[:5] = 10.0 * torch.randn(5, k, generator=g)  # D carries these coordinates' variance
    v_s = 1e-3 * torch.randn(d, generator=g)
    v_s[:5] = torch.tensor([3.0, -2.0, 1.5, -4.0, 2.5])
    if small_moves == "few_leveraged":  # D's leverage on five coordinates that move a little
        factor[5:10] = 30.0 * torch.randn(5, k, generator=g)
        v_s[5:10] = 4.9e-3
    elif small_moves == "thinly_leveraged":  # every other coordinate moves by 4.9·10⁻³
        v_s[5:] = 4.9e-3 * torch.sign(torch.randn(d - 5, generator=g))
    if small_moves != "far":
        v_s[:5] *= 0.1  # and a smaller KL, whose 10⁻³ the bound on their share may exceed
    v = {"mean": 0.01 * torch.randn(d, generator=g), "log_std": v_s}
    if small_moves != "far":
        del v["mean"]  # (its term alone would lift the KL above what the bound misses)
    q = gaussian(mean, log_std, factor)
    q64, s64 = gaussian(mean.double(), log_std.double(), factor.double()), log_std.double()
    v64 = {b: x.double() for b, x in v.items()}
    passes: list[int] = []
    original = LowRankGaussian.weighted_grams

    def counted(self: LowRankGaussian, weights: torch.Tensor) -> torch.Tensor:
        passes.append(int(weights.shape[0]))
        return original(self, weights)

    monkeypatch.setattr(LowRankGaussian, "weighted_grams", counted)
    kl_at = shift_kl(q, v)
    for t in (0.5, 0.3, 0.1, 0.01, 0.4):  # the first t bounds the rest: one pass over D
        expected = float(kl_divergence(shifted(q64, s64, v64, t), q64))
        assert kl_at(t) == pytest.approx(expected, rel=1e-5)
    assert len(passes) == 1
    kl_at(3.0)  # beyond the bound: the moments are taken again, for the larger range
    assert len(passes) == 2
    expected = float(kl_divergence(shifted(q64, s64, v64, 3.0), q64))
    assert kl_at(3.0) == pytest.approx(expected, rel=1e-5)

    passes.clear()
    atol = 1e-3 * float(kl_divergence(shifted(q64, s64, v64, 0.5), q64))
    rough = shift_kl(q, v, atol=atol)
    for t in (0.5, 0.3, 0.1, 0.01, 0.4):
        expected = float(kl_divergence(shifted(q64, s64, v64, t), q64))
        assert abs(rough(t) - expected) <= atol + 1e-5 * expected
    assert len(passes) == (1 if small_moves == "thinly_leveraged" else 0)
