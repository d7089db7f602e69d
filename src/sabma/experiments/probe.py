"""The reference point of transfer learning: a linear probe on frozen pre-trained features.

Multinomial logistic regression on the head's input features, fitted by L-BFGS with an L2
penalty λ‖W‖² chosen on the validation NLL from a small grid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from sabma.metrics import classification_metrics, negative_log_likelihood
from sabma.models.inputs import Inputs
from sabma.models.registry import head_features
from sabma.predict.temperature import apply_temperature, fit_temperature

PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _fit(features: Tensor, labels: Tensor, classes: int, penalty: float) -> nn.Linear:
    linear = nn.Linear(features.shape[1], classes).double()
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(
        linear.parameters(),
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = cross_entropy(linear(features), labels) + penalty * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return linear


@torch.no_grad()
def _probs(linear: nn.Linear, features: Tensor) -> Tensor:
    return torch.softmax(linear(features), dim=1)


def linear_probe(
    model: nn.Module,
    head: str,
    x_train: Inputs,
    y_train: Tensor,
    x_val: Inputs,
    y_val: Tensor,
    x_test: Inputs,
    y_test: Tensor,
    classes: int,
) -> dict[str, object]:
    """Fit the probe (λ by validation NLL) and return its test/validation metrics and λ."""
    model.eval()
    f_train, f_val, f_test = (
        head_features(model, head, x).double() for x in (x_train, x_val, x_test)
    )
    best = None
    for penalty in PENALTIES:
        linear = _fit(f_train, y_train, classes, penalty)
        nll = negative_log_likelihood(_probs(linear, f_val), y_val)
        if best is None or nll < best[0]:
            best = (nll, penalty, linear)
    assert best is not None
    _, penalty, linear = best
    with torch.no_grad():
        val_lp, test_lp = (torch.log_softmax(linear(f), dim=1) for f in (f_val, f_test))
    temperature = fit_temperature(val_lp, y_val)
    return {
        "penalty": penalty,
        "test": classification_metrics(_probs(linear, f_test), y_test),
        "val": classification_metrics(_probs(linear, f_val), y_val),
        "temperature": temperature,
        "test_ts": classification_metrics(apply_temperature(test_lp, temperature).exp(), y_test),
    }
