"""The contract of every optimiser that steps twice (a subclass of TwoStepOptimizer): SAM, FSAM,
SA-BMA (natural and gradient variance) and bSAM, run on the same small network with a BatchNorm.

- ``step(closure)`` equals the explicit calls;
- a state-dict round trip in the middle of training continues identically;
- a step that fails on either pass leaves parameters and running statistics as they were, and a
  finished step leaves nothing behind (no backup, not perturbed);
- running statistics move once per step, with the first pass's batch;
- bad arguments and calls out of order are refused with clear errors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step import FSAM, SABMA, SAM
from sabma.step.bsam import BSAM
from sabma.step.two_step import TwoStepOptimizer
from sabma.variance import NaturalVariance

X = torch.randn(16, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
Y = torch.arange(16) % 3


def network() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8, momentum=1.0), nn.ReLU(), nn.Linear(8, 3)
    ).double()


@dataclass
class Setup:
    forward: Callable[[Tensor], Tensor]
    optimizer: TwoStepOptimizer
    holder: nn.Module  # whose state_dict holds what is trained
    model: nn.Module  # the network (its BatchNorm)
    begin: Callable[[], None]  # what step() does before the first pass (bSAM: its noise)


def _sam(seed: int, **kw: float) -> Setup:
    torch.manual_seed(seed)
    model = network()
    opt = SAM(model.parameters(), lr=0.1, momentum=0.9, model=model, **kw)
    return Setup(model, opt, model, model, lambda: None)


def _fsam(seed: int, **kw: float) -> Setup:
    torch.manual_seed(seed)
    model = network()
    opt = FSAM(model.parameters(), lr=0.1, momentum=0.9, model=model, **kw)
    return Setup(model, opt, model, model, lambda: None)


def _sabma(variance: str) -> Callable[..., Setup]:
    def build(seed: int, **kw: float) -> Setup:
        torch.manual_seed(seed)
        model = network()
        posterior = GaussianPosterior(model, "all", rank=2).double()
        d = posterior.dim
        options: dict[str, object] = {"variance": "gradient"}
        if variance == "natural":
            prior = LowRankGaussian(
                torch.zeros(d, dtype=torch.float64),
                torch.ones(d, dtype=torch.float64),
                torch.zeros(d, 0, dtype=torch.float64),
            )
            options = {
                "variance": NaturalVariance(ess=16, curvature="reparam", source="clean"),
                "prior": prior,
            }
        opt = SABMA(posterior, lr=0.05, momentum=0.9, **{"rho": 0.1, **kw}, **options)
        return Setup(posterior, opt, posterior, model, lambda: None)

    return build


def _bsam(seed: int, **kw: float) -> Setup:
    torch.manual_seed(seed)
    model = network()
    opt = BSAM(model.parameters(), lr=0.01, n_data=16, **{"rho": 0.05, **kw}, model=model)
    return Setup(model, opt, model, model, opt.sample_noise)


SETUPS = {
    "sam": _sam,
    "fsam": _fsam,
    "sabma-natural": _sabma("natural"),
    "sabma-gradient": _sabma("gradient"),
    "bsam": _bsam,
}


def closure_for(setup: Setup, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        loss = cross_entropy(setup.forward(x), y)
        loss.backward()
        return loss

    return closure


def train(setup: Setup, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (8,), generator=gen)
        setup.optimizer.zero_grad()
        setup.optimizer.step(closure_for(setup, X[idx], Y[idx]))


def snapshot(setup: Setup) -> list[Tensor]:
    return [t.detach().clone() for t in setup.holder.state_dict().values()]


def assert_same(a: list[Tensor], b: list[Tensor]) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


@pytest.fixture(params=sorted(SETUPS))
def build(request: pytest.FixtureRequest) -> Callable[..., Setup]:
    return SETUPS[request.param]


def test_every_two_pass_optimiser_is_covered() -> None:
    """A new TwoStepOptimizer in sabma.step must join SETUPS (or this contract is incomplete)."""
    import sabma.step.bsam
    import sabma.step.fsam
    import sabma.step.sabma
    import sabma.step.sam

    modules = (sabma.step.sam, sabma.step.fsam, sabma.step.sabma, sabma.step.bsam)
    found = {
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, TwoStepOptimizer)
        and obj is not TwoStepOptimizer
    }
    covered = {type(SETUPS[name](0).optimizer) for name in SETUPS}
    assert found <= covered, found - covered


def test_closure_equals_the_explicit_calls(build: Callable[..., Setup]) -> None:
    by_closure, explicit = build(0), build(0)
    torch.manual_seed(5)
    train(by_closure, 3, seed=1)
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(1)
    opt = explicit.optimizer
    for _ in range(3):
        idx = torch.randint(0, len(X), (8,), generator=gen)
        closure = closure_for(explicit, X[idx], Y[idx])
        opt.zero_grad()
        explicit.begin()
        closure()
        opt.first_step(zero_grad=True)
        closure()
        opt.second_step()
    assert_same(snapshot(by_closure), snapshot(explicit))


def test_a_state_dict_round_trip_continues_identically(build: Callable[..., Setup]) -> None:
    run = build(0)
    train(run, 3, seed=1)
    saved = copy.deepcopy(run.holder.state_dict()), copy.deepcopy(run.optimizer.state_dict())
    rng = torch.get_rng_state()
    train(run, 3, seed=2)

    resumed = build(99)  # another start, overwritten by the loaded state
    resumed.holder.load_state_dict(saved[0])
    resumed.optimizer.load_state_dict(saved[1])
    torch.set_rng_state(rng)
    train(resumed, 3, seed=2)
    assert_same(snapshot(run), snapshot(resumed))
    assert resumed.optimizer.state is resumed.optimizer.base_optimizer.state


@pytest.mark.parametrize("failing_pass", [1, 2])
def test_a_failed_step_changes_nothing_and_a_step_leaves_nothing(
    build: Callable[..., Setup], failing_pass: int
) -> None:
    run = build(0)
    train(run, 2, seed=1)
    before = snapshot(run)
    buffers = [b.clone() for b in run.model.buffers()]
    calls = 0

    def closure() -> Tensor:
        nonlocal calls
        calls += 1
        loss = cross_entropy(run.forward(X[:8]), Y[:8])
        if calls == failing_pass:
            raise FloatingPointError("a pass failed")
        loss.backward()
        return loss

    run.optimizer.zero_grad()
    with pytest.raises(FloatingPointError):
        run.optimizer.step(closure)
    run.optimizer.abandon_step()
    assert_same(snapshot(run), before)
    assert_same([b.clone() for b in run.model.buffers()], buffers)

    train(run, 1, seed=3)  # a good step after it; then nothing of it is left in flight
    assert not run.optimizer._perturbed and not run.optimizer._backup
    assert not getattr(run.optimizer, "_noise_backup", [])


def test_running_statistics_move_once_with_the_first_pass(build: Callable[..., Setup]) -> None:
    run = build(0)
    bn = run.model[1]
    seen: list[Tensor] = []
    bn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().mean(0)))
    tracked = int(bn.num_batches_tracked)
    train(run, 1, seed=1)
    assert len(seen) == 2  # two passes
    assert int(bn.num_batches_tracked) == tracked + 1
    torch.testing.assert_close(bn.running_mean, seen[0])  # momentum 1: the first pass's batch
    assert not torch.allclose(seen[0], seen[1])  # (the passes differ, so the check can fail)


def test_bad_arguments_and_calls_out_of_order_are_refused(build: Callable[..., Setup]) -> None:
    with pytest.raises(ValueError, match="rho must be a finite number >= 0"):
        build(0, rho=-1.0)
    run = build(0)
    with pytest.raises(RuntimeError, match="run that loop first, or pass a closure"):
        run.optimizer.step()
    with pytest.raises(RuntimeError, match="second_step called without first_step"):
        run.optimizer.second_step()
