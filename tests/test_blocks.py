import pytest
import torch
from torch import nn

from course_lib.blocks import EncoderBlock, FeedForward, RMSNorm


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_block_matches_pytorch(norm_first, activation):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, batch_first=True,
                                        norm_first=norm_first).eval()
    ours = EncoderBlock(8, 2, 16, dropout=0.0, activation=activation, norm_first=norm_first)
    ours.load_from_torch(theirs).eval()
    x = torch.randn(2, 5, 8)
    ignore = torch.tensor([[False] * 5, [False, False, False, True, True]])
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert torch.allclose(ours(x, (~ignore)[:, None, None, :])[0], theirs(x, src_key_padding_mask=ignore)[0],
                          atol=1e-5)
    assert ours.attention_weights.shape == (2, 2, 5, 5)


def test_rms_norm_matches_pytorch_and_has_no_centring():
    x = torch.randn(3, 4, 6) * 5 + 2
    ours = RMSNorm(6, eps=1e-6)
    theirs = nn.RMSNorm(6, eps=1e-6)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    y = ours(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3, 4), atol=1e-3)
    with pytest.raises(ValueError, match="expected d_model=6, got d_model=5"):
        ours(torch.randn(2, 5))


def test_feed_forward_shapes_and_errors():
    ff = FeedForward(8, 32)
    assert ff(torch.randn(2, 3, 8)).shape == (2, 3, 8)
    assert sum(p.numel() for p in ff.parameters()) == 8 * 32 + 32 + 32 * 8 + 8
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedForward(8, 32, activation="swish")


def test_dropout_only_in_training():
    block = EncoderBlock(8, 2, 16, dropout=0.5)
    x = torch.randn(1, 4, 8)
    block.eval()
    assert torch.equal(block(x), block(x))
    block.train()
    torch.manual_seed(0)
    a = block(x)
    torch.manual_seed(1)
    assert not torch.equal(a, block(x))


# --- notebook 08: layer norm and batch norm by hand, the block's forward, measurements, figures --------------------

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from course_lib.blocks import (batch_norm, gradient_norms_per_layer,  # noqa: E402
                               init_gradient_norms, layer_norm, parameters_per_component, plot_gradient_norms,
                               plot_normalised_slice)


def test_layer_norm_matches_pytorch_with_gain_and_bias():
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(2, 5, 6, generator=gen) + 4
    norm = nn.LayerNorm(6, eps=1e-3)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, generator=gen))
        norm.bias.copy_(torch.randn(6, generator=gen))
    assert torch.allclose(layer_norm(x, norm.weight, norm.bias, eps=1e-3), norm(x), atol=1e-5)
    # any number of leading axes, and a single token
    assert torch.allclose(layer_norm(x[0, 0], norm.weight, norm.bias, 1e-3), norm(x[0, 0]), atol=1e-5)


def test_layer_norm_hand_values_constant_token_and_invariance():
    y = layer_norm(torch.tensor([[2.0, 4.0, 6.0, 8.0]]), torch.ones(4), torch.zeros(4), eps=1e-12)
    assert torch.allclose(y, torch.tensor([[-3.0, -1.0, 1.0, 3.0]]) / 5 ** 0.5)  # biased variance 5
    constant = layer_norm(torch.full((1, 4), 3.0), torch.ones(4), torch.full((4,), 0.5))
    assert torch.equal(constant, torch.full((1, 4), 0.5))  # 0 / sqrt(eps) = 0, then the bias: no nan
    x = torch.randn(3, 7)
    w, b = torch.randn(7), torch.randn(7)
    assert torch.allclose(layer_norm(5 * x - 2, w, b, 1e-9), layer_norm(x, w, b, 1e-9), atol=1e-5)


def test_layer_norm_rejects_bad_inputs():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="expected d_model=4, got d_model=3"):
        layer_norm(x, torch.ones(3), torch.zeros(4))
    with pytest.raises(TypeError, match="float"):
        layer_norm(torch.ones(2, 4, dtype=torch.long), torch.ones(4), torch.zeros(4))
    with pytest.raises(ValueError, match="eps must be a positive number"):
        layer_norm(x, torch.ones(4), torch.zeros(4), eps=0.0)


def test_batch_norm_matches_pytorch_training_mode_and_depends_on_the_batch():
    x = torch.randn(3, 4, 5) * 2 + 1
    theirs = nn.BatchNorm1d(5, affine=False).train()(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(batch_norm(x), theirs, atol=1e-5)
    other = x.clone()
    other[1:] = torch.randn(2, 4, 5)
    assert not torch.allclose(batch_norm(other)[0, 0], batch_norm(x)[0, 0])  # same token, other batch
    with pytest.raises(ValueError, match="more than one token"):
        batch_norm(torch.randn(1, 1, 5))
    with pytest.raises(ValueError, match="expected 3 axes"):
        batch_norm(torch.randn(4, 5))


def test_parameters_per_component_follow_the_formulas():
    d, d_ff = 512, 2048
    counts = parameters_per_component(EncoderBlock(d, 8, d_ff))
    assert counts == {"self-attention": 4 * d * d + 4 * d, "feed-forward": 2 * d * d_ff + d_ff + d,
                      "layer norms": 4 * d}
    block = EncoderBlock(8, 2, 32)
    assert sum(parameters_per_component(block).values()) == sum(p.numel() for p in block.parameters())
    with pytest.raises(TypeError, match="expected an EncoderBlock"):
        parameters_per_component(nn.Linear(2, 2))


def test_gradient_norms_per_layer_match_backward_and_leave_grads_alone():
    torch.manual_seed(0)
    layers = [nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)]
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="trainable parameter"):
        gradient_norms_per_layer(layers, x, lambda y: y.sum())
    layers = [nn.Linear(4, 4), nn.Linear(4, 4)]
    norms = gradient_norms_per_layer(layers, x, lambda y: y.pow(2).sum())
    assert all(p.grad is None for layer in layers for p in layer.parameters())
    layers[1](layers[0](x)).pow(2).sum().backward()
    expected = [torch.sqrt(sum(p.grad.pow(2).sum() for p in layer.parameters())) for layer in layers]
    assert torch.allclose(norms, torch.stack(expected))
    with pytest.raises(ValueError, match="scalar"):
        gradient_norms_per_layer(layers, x, lambda y: y)
    with pytest.raises(ValueError, match="at least one layer"):
        gradient_norms_per_layer([], x, lambda y: y.sum())


def test_init_gradient_norms_post_ln_grows_with_depth_pre_ln_does_not():
    state = torch.get_rng_state()
    shallow = {nf: init_gradient_norms(2, nf, d_model=32, n_seeds=3) for nf in (False, True)}
    deep = {nf: init_gradient_norms(16, nf, d_model=32, n_seeds=3) for nf in (False, True)}
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert deep[False].shape == (16,) and bool((deep[False] > 0).all())
    # Xiong et al. (2020): post-LN's gradient next to the output does not shrink with depth; pre-LN's does not grow.
    assert deep[False][-1] > 1.2 * shallow[False][-1]
    assert deep[True][-1] < 1.2 * shallow[True][-1]
    assert deep[False][-1] > 1.3 * deep[True][-1]
    # in pre-LN the layers next to the output get smaller gradients than those next to the input
    assert deep[True][-1] < deep[True][0]
    assert torch.equal(init_gradient_norms(3, True, d_model=16, n_seeds=1), init_gradient_norms(3, True, d_model=16,
                                                                                                   n_seeds=1))
    with pytest.raises(ValueError, match="depth must be a positive int"):
        init_gradient_norms(0, True)
    with pytest.raises(TypeError, match="norm_first"):
        init_gradient_norms(2, "yes")


def test_plots_label_their_axes_and_validate():
    ax = plot_gradient_norms({"post-LN": torch.tensor([1.0, 2.0]), "pre-LN": torch.tensor([1.0, 0.5])},
                             title="depth 2")
    assert ax.get_title() == "depth 2" and len(ax.lines) == 2 and "layer" in ax.get_xlabel()
    with pytest.raises(ValueError, match="at least one series"):
        plot_gradient_norms({})
    ax = plot_normalised_slice("layer", B=2, T=3, d_model=4)
    assert "LayerNorm" in ax.get_title() and "d_model = 4" in ax.get_title()
    ax = plot_normalised_slice("batch", B=2, T=3, d_model=4, feature=1)
    assert "B·T = 6" in ax.get_title()
    with pytest.raises(ValueError, match="kind must be"):
        plot_normalised_slice("group")
    with pytest.raises(ValueError, match="outside"):
        plot_normalised_slice("batch", B=2, T=3, d_model=4, feature=4)
    plt.close("all")
