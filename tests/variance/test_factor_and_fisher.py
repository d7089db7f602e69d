"""The low-rank factor against dense linear algebra, and the sampled-label Fisher gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sabma import GaussianPosterior
from sabma.variance import residual_factor, sampled_fisher_gradients
from sabma.variance.factor import canonical_signs
from sabma.variance.fisher_gradients import _per_example_loop, _per_example_vmap, fisher_sketch
from sabma.variance.layer_gradients import layer_gradients
from sabma.variance.row_blocks import DenseRows
from sabma.variance.state import VarianceState
from tests.conftest import mlp

F64 = torch.float64


def dense_problem(d: int = 12, m: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    prior_precision = torch.rand(d, generator=gen, dtype=F64) + 0.5
    u = torch.randn(d, m, generator=gen, dtype=F64) * 2.0
    precision = torch.diag(prior_precision) + u @ u.T
    var = 1.0 / precision.diagonal()  # the natural-gradient diagonal: diag(P̃) = 1
    return prior_precision, u, precision, var


def test_factor_solves_the_stationarity_condition() -> None:
    """P* D = Σ⁻¹ D with Σ = Λ + DDᵀ (the D-stationarity of KL(q‖N(μ, P*⁻¹))), and the columns
    are the directions of smallest whitened precision."""
    prior_precision, u, precision, var = dense_problem()
    d = residual_factor(
        var, var * prior_precision, var.sqrt().unsqueeze(1) * u, rank=3, iterations=200
    )
    sigma = torch.diag(var) + d @ d.T
    assert torch.allclose(precision @ d, torch.linalg.solve(sigma, d), atol=1e-8)
    whitened = var.sqrt().unsqueeze(1) * precision * var.sqrt().unsqueeze(0)
    pi, vectors = torch.linalg.eigh(whitened)
    expected = var.sqrt().unsqueeze(1) * vectors[:, :3] * (1 / pi[:3] - 1).sqrt()
    assert torch.allclose((d @ d.T), expected @ expected.T, atol=1e-8)
    norms = d.norm(dim=0)
    assert bool((norms[:-1] >= norms[1:]).all())  # largest added variance first


def test_factor_is_zero_where_the_diagonal_is_already_right() -> None:
    """Without correlations (diagonal data precision) the diagonal is the exact posterior and
    the factor adds nothing."""
    gen = torch.Generator().manual_seed(1)
    prior_precision = torch.rand(8, generator=gen, dtype=F64) + 0.5
    data = torch.rand(8, generator=gen, dtype=F64) * 4
    u = torch.diag(data.sqrt())  # UUᵀ = diag(data)
    var = 1.0 / (prior_precision + data)
    d = residual_factor(var, var * prior_precision, var.sqrt().unsqueeze(1) * u, rank=2)
    assert float(d.abs().max()) < 1e-6


def test_factor_warm_start_and_rank_zero() -> None:
    prior_precision, u, _, var = dense_problem()
    args = (var, var * prior_precision, var.sqrt().unsqueeze(1) * u)
    assert residual_factor(*args, rank=0).shape == (12, 0)
    cold = residual_factor(*args, rank=2, iterations=200)
    warm = residual_factor(*args, rank=2, previous=cold, iterations=1)
    assert torch.allclose(warm @ warm.T, cold @ cold.T, atol=1e-6)


def test_factor_signs_do_not_depend_on_the_eigen_solver() -> None:
    """A column's sign is arbitrary for eigh, and float rounding can flip it; the factor's is
    fixed (along the previous factor's column, else largest entry positive), so the same
    subspace gives the same D — a flipped column would move every later sample w = … + D z₂."""
    prior_precision, u, _, var = dense_problem()
    args = (var, var * prior_precision, var.sqrt().unsqueeze(1) * u)
    cold = residual_factor(*args, rank=3, iterations=200)
    flipped = cold * torch.tensor([-1.0, 1.0, -1.0], dtype=F64)
    assert torch.equal(canonical_signs(flipped), cold)
    biggest = cold.gather(0, cold.abs().argmax(0, keepdim=True))
    assert bool((biggest > 0).all())
    # along the previous factor: a warm start from -D keeps -D's orientation
    warm = residual_factor(*args, rank=3, previous=flipped, iterations=200)
    assert torch.allclose(warm, flipped, atol=1e-8)
    assert torch.equal(canonical_signs(cold, previous=flipped), flipped)
    # a zero previous column falls back to the largest entry
    previous = flipped.clone()
    previous[:, 1] = 0
    assert torch.equal(canonical_signs(flipped, previous=previous)[:, 1], cold[:, 1])


def test_sampled_fisher_diagonal_is_the_ggn_diagonal() -> None:
    """E_ŷ[g(ŷ)²] over labels drawn from the model = diag of the GGN of softmax cross-entropy
    (computed densely from the Jacobian)."""
    torch.manual_seed(0)
    posterior = GaussianPosterior(mlp(), "all").double()
    x = torch.randn(6, 2, dtype=F64)
    grads = sampled_fisher_gradients(posterior, x, label_samples=4000, batch_size=6)
    assert grads.shape == (6 * 4000, posterior.dim)
    estimate = grads.square().mean(0)
    w = posterior.mean.detach()
    exact = torch.zeros_like(w)
    for xi in x:
        jac = torch.autograd.functional.jacobian(
            lambda v, xi=xi: posterior.forward_with(v, xi.unsqueeze(0)).squeeze(0), w
        )
        p = torch.softmax(posterior.forward_with(w, xi.unsqueeze(0)).squeeze(0), 0).detach()
        lam = torch.diag(p) - torch.outer(p, p)
        exact += ((jac.T @ lam) * jac.T).sum(1)
    exact /= len(x)
    big = exact > 1e-3 * exact.max()
    assert torch.allclose(estimate[big], exact[big], rtol=0.15)


def test_vectorised_and_looped_per_example_gradients_agree() -> None:
    torch.manual_seed(1)
    posterior = GaussianPosterior(mlp(), "all").double()
    x = torch.randn(5, 2, dtype=F64)
    y = torch.tensor([0, 1, 2, 1, 0])
    w = posterior.mean.detach()
    assert torch.allclose(
        _per_example_vmap(posterior, w, x, y), _per_example_loop(posterior, w, x, y), atol=1e-12
    )


def test_sampled_fisher_subset_restores_mode_and_refuses_bad_settings() -> None:
    posterior = GaussianPosterior(nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5)), "all")
    posterior.train()
    x = torch.randn(10, 2)
    grads = sampled_fisher_gradients(posterior, x, max_examples=4, label_samples=2)
    assert grads.shape == (8, posterior.dim)
    assert posterior.model.training  # back in the mode it was in
    with pytest.raises(ValueError, match="label_samples"):
        sampled_fisher_gradients(posterior, x, label_samples=0)


class _Tokens(nn.Module):
    """Token features (n, positions, 6) → LayerNorm → Linear → mean over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(6)
        self.hidden = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(self.norm(x))).mean(1))


def shifted_statistics(model: nn.Module) -> nn.Module:
    """``model`` with its BatchNorm running statistics away from (0, 1), so that x̂ matters."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model


def _conv_bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6),
        nn.BatchNorm1d(6),
        nn.Linear(6, 3),
    )


@pytest.mark.parametrize(
    ("build", "subset", "shape"),
    [
        (_conv_bn_net, "norm+head", (7, 2, 6, 6)),
        (_Tokens, "all", (7, 4, 6)),
    ],
)
def test_layer_hooks_give_the_per_example_gradients_of_vmap(build, subset, shape) -> None:
    """BatchNorm on running statistics (2-d and 1-d), LayerNorm over tokens and Linear layers: the
    one-pass hook gradients equal vmap's, column for column."""
    torch.manual_seed(2)
    posterior = GaussianPosterior(shifted_statistics(build().double()), subset).double()
    posterior.eval()
    x = torch.randn(*shape, dtype=F64)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 2])
    w = posterior.mean.detach() + 0.1 * torch.randn(posterior.dim, dtype=F64)
    hooks = layer_gradients(posterior, w, x, y)
    assert hooks is not None
    assert torch.allclose(hooks, _per_example_vmap(posterior, w, x, y), atol=1e-10)


def test_layer_hooks_decline_what_they_cannot_do() -> None:
    """BatchNorm on batch statistics: None (the caller falls back to vmap, and the sampled Fisher
    still comes out right). Convolutions: tests/variance/test_layer_calls.py."""
    x, y = torch.randn(5, 2, 6, 6), torch.tensor([0, 1, 2, 1, 0])
    batch_stats = GaussianPosterior(_conv_bn_net(), "norm+head")
    batch_stats.train()
    assert layer_gradients(batch_stats, batch_stats.mean.detach(), x, y) is None
    grads = sampled_fisher_gradients(batch_stats, x)
    assert grads.shape == (5, batch_stats.dim) and bool(torch.isfinite(grads).all())


def test_labels_drawn_in_the_hooked_pass_are_those_of_a_separate_forward() -> None:
    """The sampled Fisher draws its labels from the hooked pass's own probabilities (one forward
    instead of two): the same labels, so the same G, as a no-grad forward then one hooked pass per
    draw; batches, draws and the generator's stream all line up."""
    torch.manual_seed(3)
    model = _conv_bn_net().double()
    posterior = GaussianPosterior(model, "norm+head").double()
    posterior.eval()
    x = torch.randn(9, 2, 6, 6, dtype=F64)
    w = posterior.mean.detach() + 0.1 * torch.randn(posterior.dim, dtype=F64)
    fused = sampled_fisher_gradients(
        posterior, x, w, label_samples=3, batch_size=4, generator=torch.Generator().manual_seed(5)
    )
    generator, rows = torch.Generator().manual_seed(5), []
    for part in torch.arange(9).split(4):
        with torch.no_grad():
            probs = torch.softmax(posterior.forward_with(w, x[part]), dim=-1)
        draws = torch.multinomial(probs, 3, True, generator=generator)
        for s in range(3):
            separate = layer_gradients(posterior, w, x[part], draws[:, s])
            assert separate is not None
            rows.append(separate)
    assert fused.shape == (27, posterior.dim)
    assert torch.equal(fused, torch.cat(rows))


def _stream_of(grads: torch.Tensor, block: int, monkeypatch) -> None:
    """fisher_sketch sees ``grads`` in blocks, as the per-example passes would give them: new
    tensors, which the sketch may overwrite."""
    import sabma.variance.fisher_gradients as module

    monkeypatch.setattr(
        module,
        "fisher_gradient_blocks",
        lambda *a, **k: (DenseRows(part.clone()) for part in grads.split(block)),
    )


def test_fisher_sketch_keeps_every_row_where_they_fit(monkeypatch) -> None:
    """Within the budget the sketch is exactly G: diag GᵀG/M (the same float operations) and
    every row in order — the refresh of a small subset is unchanged by the streaming."""
    grads = torch.randn(23, 40)
    _stream_of(grads, 5, monkeypatch)
    sketch = fisher_sketch(GaussianPosterior(mlp(), "all"), torch.zeros(1), max_rows=23)
    assert sketch.count == 23
    assert torch.equal(sketch.rows, grads)
    assert torch.equal(sketch.diagonal, grads.square().mean(0))


@pytest.mark.parametrize("max_rows", [0, 3, 7])
def test_fisher_sketch_streams_the_diagonal_and_samples_rows(monkeypatch, max_rows) -> None:
    """Over the budget: the diagonal still comes from every row, and the kept rows are distinct
    rows of G chosen uniformly (each of 40 rows is kept with probability max_rows/40: over 400
    seeds every row is kept about 10·max_rows times, the last ones as often as the first)."""
    grads = torch.randn(40, 30, dtype=F64)
    _stream_of(grads, 6, monkeypatch)
    posterior = GaussianPosterior(mlp(), "all")
    kept = torch.zeros(40)
    for seed in range(400):
        gen = torch.Generator().manual_seed(seed)
        sketch = fisher_sketch(posterior, torch.zeros(1), max_rows=max_rows, generator=gen)
        assert sketch.count == 40 and sketch.rows.shape == (max_rows, 30)
        assert torch.allclose(sketch.diagonal, grads.square().mean(0), rtol=1e-12)
        match = (sketch.rows.unsqueeze(1) == grads.unsqueeze(0)).all(-1)  # (kept, 40)
        assert bool((match.sum(1) == 1).all())  # each kept row is one row of G
        kept += match.sum(0)
        _stream_of(grads, 6, monkeypatch)
    assert bool((kept <= 400).all())  # never the same row twice in one sketch
    if max_rows:
        expected = 400 * max_rows / 40
        assert float((kept - expected).abs().max()) < 5 * expected**0.5


def test_refresh_keeps_the_rows_the_budget_allows(monkeypatch) -> None:
    """The refresh hands the factor max(factor_floats // d, 2K) rows and the diagonal all of
    them; the budget leaves the default (norm+head, 256 rows) untouched."""
    import sabma.variance.natural as natural
    import sabma.variance.state as state

    seen: list[int] = []
    original = state.residual_factor

    def spy(var, prior_share, data_sqrt, rank, **kwargs):
        seen.append(data_sqrt.shape[1])
        return original(var, prior_share, data_sqrt, rank, **kwargs)

    monkeypatch.setattr(state, "residual_factor", spy)
    torch.manual_seed(0)
    posterior = GaussianPosterior(mlp(), "all", rank=2)
    x = torch.randn(50, 2)
    prior = posterior.gaussian()
    prior = type(prior)(prior.mean.detach(), torch.ones(posterior.dim), prior.factor[:, :0])
    for floats, rows in ((10**9, 50), (posterior.dim * 9, 9), (1, 4)):
        options = natural.NaturalVariance(ess=50, data=x, factor_floats=floats)
        VarianceState(options, posterior, prior).refresh(None)
        assert seen[-1] == rows
        assert bool(torch.isfinite(posterior.factor).all())
        assert float(posterior.factor.detach().abs().max()) > 0
    with pytest.raises(ValueError, match="factor_floats"):
        natural.NaturalVariance(ess=50, data=x, factor_floats=0)


class _DataDependent(nn.Module):
    """A 1-d convolution (no layer hooks) whose forward branches on a value: vmap refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x).mean(2)
        return out if float(out.sum()) > -1e9 else -out


def test_networks_vmap_refuses_take_one_pass_per_example(monkeypatch, caplog) -> None:
    """Where vmap fails, the rows come from one backward pass per example, with the same sampled
    labels; the network's class is remembered, so the next refresh does not try (or warn)
    again."""
    import sabma.variance.fisher_gradients as module

    monkeypatch.setattr(module, "_LOOPED", set())
    torch.manual_seed(5)
    posterior = GaussianPosterior(_DataDependent(), "all").double()
    posterior.eval()
    x = torch.randn(6, 1, 5, dtype=F64)
    w = posterior.mean.detach()
    with caplog.at_level("WARNING", logger=module.__name__):
        grads = sampled_fisher_gradients(posterior, x, generator=torch.Generator().manual_seed(0))
    assert "vmap failed" in caplog.text and _DataDependent in module._LOOPED
    with torch.no_grad():
        probs = torch.softmax(posterior.forward_with(w, x), dim=-1)
    labels = torch.multinomial(probs, 1, True, generator=torch.Generator().manual_seed(0))[:, 0]
    assert torch.equal(grads, _per_example_loop(posterior, w, x, labels))
    caplog.clear()
    with caplog.at_level("WARNING", logger=module.__name__):
        sampled_fisher_gradients(posterior, x)
    assert "vmap failed" not in caplog.text
