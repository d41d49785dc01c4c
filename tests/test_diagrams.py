"""Every concept diagram draws, writes the shapes it was given, and refuses sizes it cannot draw."""
import inspect

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course_lib import diagrams  # noqa: E402
from course_lib.diagrams import (plot_attention_flow, plot_block_wiring, plot_broadcast, plot_data_flow,  # noqa: E402
                                 plot_encoder_decoder, plot_heads_flow, plot_heads_split, plot_lookup_table,
                                 plot_model_families, plot_training_loop)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(axes):
    axes = np.atleast_1d(axes)
    return [t.get_text() for ax in axes for t in ax.texts] + [ax.get_title() for ax in axes]


def _arrows(ax):
    return [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]


def test_every_diagram_draws_with_its_defaults_and_is_listed():
    public = {name for name, f in inspect.getmembers(diagrams, inspect.isfunction)
              if name.startswith("plot_") and f.__module__ == diagrams.__name__}
    assert public == set(diagrams.__all__)
    for name in diagrams.__all__:
        if name == "plot_heads_split":
            result = diagrams.plot_heads_split(1, 3, 4, 2)
        elif name == "plot_broadcast":
            result = diagrams.plot_broadcast((2, 1), (3,))
        elif name == "plot_lookup_table":
            result = diagrams.plot_lookup_table({"a": "b"}, "a")
        else:
            result = getattr(diagrams, name)()
        for ax in np.atleast_1d(result):
            assert ax.texts or ax.patches or ax.images, name  # something was drawn
            assert not ax.axison or name == "plot_heads_split", name  # a diagram has no frame
        assert name in diagrams.__doc__  # the module's table lists it


def test_broadcast_draws_torch_sums_and_marks_the_stretched_copies():
    ax = plot_broadcast((3, 1), (4,))
    texts = _texts(ax)
    assert "a: (3, 1) → (3, 4)" in texts and "b: (4,) → (3, 4)" in texts and "a + b: (3, 4)" in texts
    # a = [[0], [1], [2]], b = [0, 10, 20, 30]: the sums come out of torch
    assert {"0", "10", "21", "32"} <= set(texts)
    dashed = [p for p in ax.patches if p.get_linestyle() == "--"]
    assert len(dashed) == 3 * 3 + 2 * 4  # the copies: 3 of each row of a, 2 of b's row
    assert "b: (2, 1) → (2, 3)" in _texts(plot_broadcast((2, 3), (2, 1)))
    assert "a + b: ()" in _texts(plot_broadcast((), ()))


@pytest.mark.parametrize("a, b, message", [
    ((3, 2), (3,), r"shapes \(3, 2\) and \(3,\) do not broadcast"),
    ((2, 3, 4), (4,), "at most 2 axes"),
    ((9,), (1,), "sizes 1 to 8"),
    ((0,), (1,), "sizes 1 to 8"),
])
def test_broadcast_refuses_what_it_cannot_draw(a, b, message):
    with pytest.raises(ValueError, match=message):
        plot_broadcast(a, b)


def test_lookup_table_hard_finds_the_equal_key_or_raises_and_soft_blends_all():
    table = {"cat": "Katze", "dog": "Hund", "fish": "Fisch"}
    hard, soft = plot_lookup_table(table, "fish")
    assert "Fisch\n(one value)" in _texts(hard) and not any("KeyError" in t for t in _texts(hard))
    assert [t for t in _texts(soft) if t in ("w1", "w2", "w3")] == ["w1", "w2", "w3"]  # symbols without weights
    hard, soft = plot_lookup_table(table, "kitten", weights=[0.2, 0.1, 0.7])
    assert any("KeyError" in t and "kitten" in t for t in _texts(hard))
    assert {"0.20", "0.10", "0.70"} <= set(_texts(soft))
    widths = sorted(line.get_linewidth() for line in soft.lines)
    assert widths[-1] > 3 * widths[0]  # thicker arrows for larger weights
    with pytest.raises(ValueError, match="weights must be 3 non-negative numbers summing to 1"):
        plot_lookup_table(table, "cat", weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="1 to 10 entries"):
        plot_lookup_table({}, "cat")


def test_attention_flow_writes_every_shape():
    texts = " ".join(_texts(plot_attention_flow(T=5, d_model=8, d_k=2, d_v=3)))
    for expected in ("(T, d_model)\n= (5, 8)", "(T, d_k) = (5, 2)", "(T, d_v) = (5, 3)", "(T, T) = (5, 5)",
                     "@ W_Q: (8, 2)", "@ W_V: (8, 3)", "softmax", "√d_k"):
        assert expected in texts
    with pytest.raises(ValueError, match="d_k must be a positive int, got 0"):
        plot_attention_flow(d_k=0)


def test_heads_flow_goes_down_the_split_and_up_the_merge():
    ax = plot_heads_flow(B=2, T=5, d_model=8, h=4)
    texts = " ".join(_texts(ax))
    for expected in ("(B, T, d_model) = (2, 5, 8)", "(B, T, h, d_k) = (2, 5, 4, 2)", "(B, h, T, d_k) = (2, 4, 5, 2)",
                     "(B, h, T, T) = (2, 4, 5, 5)", ".view(B, T, h, d_k)", ".transpose(1, 2)",
                     ".reshape(B, T, d_model)", "W_O", "head 1", "head 4"):
        assert expected in texts
    assert "head 5" not in texts
    assert "head 12" in " ".join(_texts(plot_heads_flow(1, 3, 24, 12)))  # many heads: the last one stands for the rest
    with pytest.raises(ValueError, match="h=3 must divide d_model=8"):
        plot_heads_flow(1, 3, 8, 3)


def test_block_wiring_has_a_norm_on_the_residual_path_only_in_post_ln():
    post, pre = plot_block_wiring()
    for ax in (post, pre):
        assert _texts(ax).count("self-attention") == 1 and _texts(ax).count("feed-forward") == 1
    # two norms per block either way; post-LN puts them on the trunk (x = 0), pre-LN on the branches
    assert [round(t.get_position()[0], 1) for t in post.texts if t.get_text() == "LayerNorm"] == [0.0, 0.0]
    assert [round(t.get_position()[0], 1) for t in pre.texts if t.get_text() == "LayerNorm"] == [2.2, 2.2]
    assert "x = norm(x + sublayer(x))" in post.get_title() and "x = x + sublayer(norm(x))" in pre.get_title()


def test_encoder_decoder_sends_the_memory_to_every_decoder_layer():
    for n in (1, 3, 6):
        ax = plot_encoder_decoder(num_layers=n)
        texts = _texts(ax)
        assert sum(t.startswith("decoder layer") for t in texts) == n
        assert texts.count("keys, values") == n
        green_arrows = [a for a in _arrows(ax) if a.arrow_patch.get_edgecolor()[:3] == matplotlib.colors.to_rgb(diagrams.GREEN)]
        assert len(green_arrows) == n
    with pytest.raises(ValueError, match="at most 6"):
        plot_encoder_decoder(num_layers=7)


def test_training_loop_is_a_cycle_of_five_stations():
    ax = plot_training_loop()
    assert len(_arrows(ax)) == 5
    texts = " ".join(_texts(ax))
    for station in ("batch", "forward", "loss", "backward", "optimizer.step()"):
        assert station in texts


def test_model_families_show_three_columns_with_their_masks():
    ax = plot_model_families()
    texts = " ".join(_texts(ax))
    for words in ("encoder-only (BERT-style)", "decoder-only (GPT-style)", "encoder–decoder (the translator)",
                  "ALL positions", "EARLIER positions", "cross-attention", "memory", "[MASK]"):
        assert words in texts, words
    assert len(_arrows(ax)) == 3 + 3 + 4  # two stacks of three arrows, and the translator's four


def test_heads_split_titles_and_validation():
    ax = plot_heads_split(2, 5, 8, 2)
    assert "(B, h, T, d_k) = (2, 2, 5, 4)" in ax.get_title()
    ax = plot_heads_split(1, 3, 10, 4)
    assert "does not divide" in ax.get_title()
    with pytest.raises(ValueError, match="h must be a positive int, got 0"):
        plot_heads_split(1, 3, 8, 0)


def test_plot_data_flow_puts_a_shape_on_every_arrow(_close_figures):
    ax = plot_data_flow(B=2, S=8, T=9, d_model=64, n_vocab=13)
    texts = [t.get_text() for t in ax.texts]
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    shapes = [t for t in texts if t.startswith("(B")]
    assert len(shapes) >= len(arrows) - 1  # every arrow but the memory arrow, labelled in its own text
    assert any("memory" in t and "(2, 8, 64)" in t for t in texts)
    for expected in ("(B, S) = (2, 8)", "(B, T) = (2, 9)", "(B, S, d_model) = (2, 8, 64)",
                     "(B, T, n_vocab) = (2, 9, 13)  logits"):
        assert expected in texts
    assert "B=2, S=8, T=9, d_model=64, n_vocab=13" in ax.get_title()
    with pytest.raises(ValueError, match="d_model must be a positive int"):
        plot_data_flow(d_model=0)


