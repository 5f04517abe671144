"""ResNetAudioRanker: shapes, size, GroupNorm's per-sample independence, prompt, freezing."""

import pytest
import torch
from torch import nn

from gradkit.core.params import count_parameters
from gradkit.models import InputPrompt, ResNetAudioRanker


@pytest.mark.parametrize("shape", [(3, 1, 40, 32), (2, 1, 32, 20), (1, 1, 13, 7)])
def test_forward_shapes_any_input_size(shape):
    torch.manual_seed(0)
    logits, score = ResNetAudioRanker()(torch.randn(shape))
    assert logits.shape == (shape[0], 6)
    assert score.shape == (shape[0],)
    assert torch.isfinite(logits).all() and torch.isfinite(score).all()


def test_parameter_count_is_small_and_counted_right():
    model = ResNetAudioRanker()
    n = count_parameters(model)
    assert n == sum(p.numel() for p in model.parameters())
    assert 5_000 < n < 50_000
    wider = ResNetAudioRanker(widths=(16, 32, 64))
    assert count_parameters(wider) > n


def test_uses_groupnorm_not_batchnorm():
    model = ResNetAudioRanker()
    kinds = {type(m) for m in model.modules()}
    assert nn.GroupNorm in kinds
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)


def test_samples_do_not_interact_in_training_mode():
    """GroupNorm: sample 0's outputs and gradient do not depend on the rest of its batch."""
    torch.manual_seed(0)
    model = ResNetAudioRanker().train()
    x0 = torch.randn(1, 1, 40, 32)
    batch_a = torch.cat([x0, torch.randn(3, 1, 40, 32)])
    batch_b = torch.cat([x0, 5 * torch.randn(3, 1, 40, 32) + 2])

    def first_sample_grad(batch):
        model.zero_grad()
        logits, score = model(batch)
        (logits[0].sum() + score[0]).backward()
        return logits[0].detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    out_a, grad_a = first_sample_grad(batch_a)
    out_b, grad_b = first_sample_grad(batch_b)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(grad_a, grad_b)


def test_arch_config_rebuilds_the_same_model():
    model = ResNetAudioRanker(n_classes=4, widths=(4, 8), prompt_shape=(1, 10, 12))
    clone = ResNetAudioRanker(**model.arch_config())
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert model.arch_config()["prompt_shape"] == [1, 10, 12]


def test_zero_prompt_starts_as_the_plain_model_and_learns():
    torch.manual_seed(1)
    plain = ResNetAudioRanker()
    prompted = ResNetAudioRanker(prompt_shape=(1, 40, 32))
    prompted.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 1, 40, 32)
    torch.testing.assert_close(prompted(x)[0], plain(x)[0])
    with torch.no_grad():
        prompted.prompt.prompt.add_(0.5)
    assert not torch.allclose(prompted(x)[0], plain(x)[0])


def test_input_prompt_checks_shapes():
    prompt = InputPrompt((1, 4, 5))
    assert prompt(torch.zeros(3, 1, 4, 5)).shape == (3, 1, 4, 5)
    with pytest.raises(ValueError, match="shape"):
        prompt(torch.zeros(3, 1, 5, 4))
    with pytest.raises(ValueError):
        InputPrompt((1, 0, 5))


def test_freeze_trunk_leaves_prompt_and_heads_trainable():
    model = ResNetAudioRanker(prompt_shape=(1, 8, 8)).freeze_trunk()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt.prompt", "classifier.weight", "classifier.bias",
                         "score_head.weight", "score_head.bias"}
    logits, score = model(torch.randn(2, 1, 8, 8))
    (logits.sum() + score.sum()).backward()
    assert all(p.grad is None for p in model.trunk_parameters())
    assert model.prompt.prompt.grad is not None and model.prompt.prompt.grad.abs().sum() > 0
    assert count_parameters(model, trainable_only=True) == 64 + 32 * 6 + 6 + 32 + 1


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="widths"):
        ResNetAudioRanker(widths=())
    with pytest.raises(ValueError, match=r"\[N, 1, mels, frames\]"):
        ResNetAudioRanker()(torch.randn(2, 40, 32))
