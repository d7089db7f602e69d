"""A transformer text classifier under the posterior: LayerNorms + head, dict inputs, SA-BMA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.functional import cross_entropy

from sabma import SABMA, GaussianPosterior, LowRankGaussian
from sabma.models.text import TextClassifier, build_text_classifier

transformers = pytest.importorskip("transformers")


def _tiny_encoder() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config)


def _batch(n: int = 12, length: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, 50, (n, length))
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::2, 5:] = 0  # padding
    return {"input_ids": ids, "attention_mask": mask}


def test_norm_and_head_subset_of_a_transformer() -> None:
    model = TextClassifier(_tiny_encoder(), 16, 3)
    posterior = GaussianPosterior(model, "norm+head", rank=2)
    layer_norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(layer_norms) == 5  # embeddings + 2 per layer
    expected = {f"{n}.{p}" for n in layer_norms for p in ("weight", "bias")}
    assert set(posterior.names) == expected | {"classifier.weight", "classifier.bias"}


def test_padding_does_not_change_the_pooled_output() -> None:
    model = TextClassifier(_tiny_encoder(), 16, 3).eval()
    batch = _batch()
    longer = {k: torch.cat([v, torch.zeros_like(v[:, :3])], dim=1) for k, v in batch.items()}
    torch.testing.assert_close(model(**longer), model(**batch), atol=1e-5, rtol=0)


def test_sabma_trains_a_text_posterior_with_dict_inputs() -> None:
    model = TextClassifier(_tiny_encoder(), 16, 3).eval()
    posterior = GaussianPosterior(model, "norm+head", rank=2, init_std=1e-3)
    opt = SABMA(
        posterior,
        variance="gradient",
        lr=0.05,
        momentum=0.9,
        rho=0.05,
        block_lr_scale={"factor": 0.01},
    )
    batch, y = _batch(), torch.arange(12) % 3

    def closure() -> torch.Tensor:
        loss = cross_entropy(posterior(**batch), y)
        loss.backward()
        return loss

    losses = []
    for _ in range(60):
        opt.zero_grad()
        losses.append(float(opt.step(closure)))
    assert losses[-1] < 0.5 * losses[0]


def test_a_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a Hugging Face model directory"):
        build_text_classifier(str(tmp_path), 2)


@pytest.mark.parametrize("method", ["sabma", "sgd", "vi"])
def test_the_training_loop_and_predictive_take_dict_inputs(method: str) -> None:
    from sabma.config import config_from_dict
    from sabma.data.tasks import TrainData
    from sabma.predict.dataset import predict_log_probs
    from sabma.training import fit

    model = TextClassifier(_tiny_encoder(), 16, 3).eval()
    posterior = GaussianPosterior(model, "norm+head", rank=1, init_std=1e-3)
    batch, y = _batch(24), torch.arange(24) % 3
    data = TrainData(batch, y, {k: v[:6] for k, v in batch.items()}, y[:6])
    cfg = config_from_dict(
        {},
        [
            f"method.name={method}",
            "optim.epochs=3",
            "optim.batch_size=8",
            "optim.lr=0.05",
            "eval.val_samples=2",
            "eval.eval_every=1",
        ],
    )
    d = posterior.dim
    prior = LowRankGaussian(posterior.mean.detach().clone(), torch.ones(d), torch.zeros(d, 0))
    history = fit(posterior, data, cfg, prior, progress=False)
    assert len(history) == 3 and all("val_nll" in e for e in history)
    log_probs = predict_log_probs(posterior, data.x_val, samples=3, batch_size=4)
    assert log_probs.shape == (6, 3) and bool(torch.isfinite(log_probs).all())
    point = predict_log_probs(posterior, data.x_val, point=True, batch_size=4)
    torch.testing.assert_close(point.exp().sum(-1), torch.ones(6))


def test_token_batches_are_trimmed_and_predictions_come_back_in_order() -> None:
    from sabma.models.inputs import take
    from sabma.predict.dataset import predict_log_probs

    model = TextClassifier(_tiny_encoder(), 16, 3).eval()
    posterior = GaussianPosterior(model, "norm+head", rank=1, init_std=0.1)
    torch.manual_seed(2)
    n, width = 11, 9
    lengths = torch.randint(2, width + 1, (n,))
    ids = torch.randint(5, 50, (n, width))
    mask = (torch.arange(width) < lengths.unsqueeze(1)).long()
    x = {"input_ids": ids * mask, "attention_mask": mask}
    short = take(x, torch.nonzero(lengths <= 4).flatten())
    assert short["input_ids"].shape[1] == int(lengths[lengths <= 4].max())
    weights = posterior.sample_weights(3, torch.Generator().manual_seed(0))
    one_by_one = torch.stack(
        [
            predict_log_probs(posterior, take(x, torch.tensor([i])), weights=weights)[0]
            for i in range(n)
        ]
    )
    batched = predict_log_probs(posterior, x, weights=weights, batch_size=4)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)
    point = predict_log_probs(posterior, x, point=True, batch_size=3)
    torch.testing.assert_close(
        point, torch.log_softmax(posterior.mean_forward(**x), -1), atol=1e-5, rtol=0
    )


def test_minilm_loads_offline_with_its_tokenizer() -> None:
    from sabma.models import build_backbone
    from sabma.models.text import load_tokenizer, tokenize

    backbone = build_backbone("minilm", 2)
    model = backbone.model.eval()
    layer_norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert backbone.head == "classifier" and len(layer_norms) == 13
    posterior = GaussianPosterior(model, "norm+head", rank=0, head=backbone.head)
    assert posterior.dim == 13 * 2 * 384 + 384 * 2 + 2
    x = tokenize(load_tokenizer("minilm"), ["a fresh, funny film", "dull"], max_tokens=64)
    assert x["input_ids"].shape == (2, 7) and int(x["attention_mask"][1].sum()) == 3
    with torch.no_grad():
        assert model(**x).shape == (2, 2)
