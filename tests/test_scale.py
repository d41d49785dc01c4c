"""course_lib.scale: counting, the online softmax, block-wise attention, timing helpers, profiles, figures."""
import json
import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from course_lib import scale
from course_lib.attention import scaled_dot_product_attention
from course_lib.masking import causal_mask
from course_lib.scale import (BenchmarkRow, attention_flops, attention_matrix_bytes, blockwise_attention,
                              feed_forward_flops, online_softmax_merge, projection_flops, scaling_exponent)
from course_lib.transformer import Seq2SeqTransformer

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")


# --- counting ---------------------------------------------------------------------------------------

def _matmul_flops(a_shape, b_shape):
    """2·n·m·p for (n, m) @ (m, p), counted from the shapes of real tensors."""
    (n, m), (m2, p) = a_shape, b_shape
    assert m == m2
    return 2 * n * m * p


def test_attention_flops_counts_both_matrix_products():
    q, k, v = torch.zeros(5, 8), torch.zeros(7, 8), torch.zeros(7, 3)
    expected = _matmul_flops(q.shape, k.T.shape) + _matmul_flops((5, 7), v.shape)
    assert attention_flops(5, 7, 8, 3) == expected == 2 * 5 * 7 * (8 + 3)
    assert attention_flops(5, 7, 8) == 2 * 5 * 7 * 16  # d_v defaults to d_k
    assert attention_flops(5, 7, 8, 3, heads=4, batch=2) == 8 * expected
    assert attention_flops(0, 7, 8) == 0


def test_heads_split_the_width_without_changing_the_count():
    assert attention_flops(100, 100, 64, heads=4) == attention_flops(100, 100, 256, heads=1)


@pytest.mark.parametrize("bad", [dict(T_q=-1), dict(d_k=0), dict(heads=0), dict(batch=1.5), dict(T_k=True)])
def test_attention_flops_rejects_bad_sizes(bad):
    args = dict(T_q=4, T_k=4, d_k=8, d_v=8, heads=1, batch=1) | bad
    with pytest.raises((TypeError, ValueError)):
        attention_flops(**args)


def test_projection_and_feed_forward_flops_match_linear_layers():
    d, d_ff, T_q, T_k = 16, 40, 3, 5
    # W_Q and W_O on T_q positions, W_K and W_V on T_k, each (T, d) @ (d, d)
    assert projection_flops(T_q, T_k, d) == 2 * _matmul_flops((T_q, d), (d, d)) + 2 * _matmul_flops((T_k, d), (d, d))
    assert projection_flops(T_q, T_k, d, batch=3) == 3 * projection_flops(T_q, T_k, d)
    assert feed_forward_flops(T_q, d, d_ff) == _matmul_flops((T_q, d), (d, d_ff)) + _matmul_flops((T_q, d_ff), (d_ff, d))
    with pytest.raises(ValueError, match="d_model"):
        projection_flops(3, 3, 0)
    with pytest.raises(ValueError, match="d_ff"):
        feed_forward_flops(3, 4, 0)


def test_attention_matrix_bytes_matches_a_real_tensor():
    _, weights = scaled_dot_product_attention(torch.randn(2, 3, 6, 4), torch.randn(2, 3, 9, 4), torch.randn(2, 3, 9, 4))
    assert attention_matrix_bytes(6, 9, heads=3, batch=2) == weights.nelement() * weights.element_size()
    assert attention_matrix_bytes(6, 9, dtype=torch.float16) == 6 * 9 * 2
    assert attention_matrix_bytes(0, 9) == 0
    with pytest.raises(TypeError, match="torch.dtype"):
        attention_matrix_bytes(4, 4, dtype="float32")


# --- the online softmax and block-wise attention ------------------------------------------------------

def _partial(scores, values):
    m = scores.amax(dim=-1)
    p = torch.exp(scores - m[..., None])
    return m, p.sum(dim=-1), p @ values


def test_merging_two_blocks_gives_the_softmax_over_all_keys():
    gen = torch.Generator().manual_seed(0)
    scores, values = torch.randn(2, 4, 9, generator=gen) * 3, torch.randn(2, 9, 5, generator=gen)
    m, l, acc = online_softmax_merge(*_partial(scores[..., :4], values[:, :4]), *_partial(scores[..., 4:], values[:, 4:]))
    assert torch.allclose(acc / l[..., None], torch.softmax(scores, dim=-1) @ values, atol=1e-6)
    assert torch.equal(m, scores.amax(dim=-1))


def test_merge_is_safe_with_huge_scores_and_empty_parts():
    scores, values = torch.tensor([[500.0, 490.0, 510.0]]), torch.tensor([[1.0], [2.0], [3.0]])
    m, l, acc = online_softmax_merge(*_partial(scores[:, :1], values[:1]), *_partial(scores[:, 1:], values[1:]))
    assert torch.isfinite(acc).all()
    assert torch.allclose(acc / l[:, None], torch.softmax(scores, dim=-1) @ values)
    empty = (torch.full((1,), -math.inf), torch.zeros(1), torch.zeros(1, 1))
    m2, l2, acc2 = online_softmax_merge(*empty, *empty)  # nothing seen on either side: no NaN
    assert torch.isneginf(m2).all() and torch.equal(l2, torch.zeros(1)) and torch.equal(acc2, torch.zeros(1, 1))
    m3, l3, acc3 = online_softmax_merge(*empty, m, l, acc)
    assert torch.equal(m3, m) and torch.allclose(l3, l) and torch.allclose(acc3, acc)


def test_merge_names_bad_shapes():
    good = (torch.zeros(3), torch.ones(3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="acc_b"):
        online_softmax_merge(*good, torch.zeros(3), torch.ones(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="l_a"):
        online_softmax_merge(torch.zeros(3), torch.ones(2), torch.zeros(3, 2), *good)


@pytest.mark.parametrize("block_size", [1, 3, 16, 40, 100])
def test_blockwise_attention_equals_pytorchs_for_any_block_size(block_size):
    gen = torch.Generator().manual_seed(block_size)
    q, k, v = torch.randn(2, 3, 17, 8, generator=gen), torch.randn(2, 3, 40, 8, generator=gen), torch.randn(2, 3, 40, 5, generator=gen)
    out = blockwise_attention(q, k, v, block_size=block_size)
    assert out.shape == (2, 3, 17, 5)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5)


def test_blockwise_attention_with_masks_scale_and_fully_masked_rows():
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 12, 6, generator=gen) for _ in range(3))
    causal = causal_mask(12)
    assert torch.allclose(blockwise_attention(q, k, v, 5, mask=causal), F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)
    assert torch.allclose(blockwise_attention(q, k, v, 4, scale=0.3), F.scaled_dot_product_attention(q, k, v, scale=0.3), atol=1e-5)
    mask = torch.rand(2, 12, 12, generator=gen) > 0.6
    mask[0, 3] = False  # a query that may attend to nothing: zeros, as the course's attention gives
    expected, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    got = blockwise_attention(q, k, v, 5, mask=mask)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(got[0, 3], torch.zeros(6))
    # huge scores do not overflow
    assert torch.isfinite(blockwise_attention(q * 100, k * 100, v, 4)).all()


def test_blockwise_attention_rejects_bad_input():
    q = torch.randn(4, 8)
    with pytest.raises(ValueError, match="block_size"):
        blockwise_attention(q, q, q, block_size=0)
    with pytest.raises(ValueError, match="d_k"):
        blockwise_attention(q, torch.randn(4, 7), torch.randn(4, 7))
    with pytest.raises(TypeError, match="bool mask"):
        blockwise_attention(q, q, q, mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        blockwise_attention(q, q, q, mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="float"):
        blockwise_attention(q.long(), q.long(), q.long())


# --- measuring -------------------------------------------------------------------------------------

def test_time_call_warms_up_then_times_each_repeat():
    calls = []
    timing = scale.time_call(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(timing.runs) == 4
    assert timing.best <= timing.median and all(t >= 0 for t in timing.runs)
    assert scale.Timing((3.0, 1.0, 2.0)).median == 2.0 and scale.Timing((3.0, 1.0, 2.0)).best == 1.0
    with pytest.raises(ValueError, match="repeats"):
        scale.time_call(lambda: None, repeats=0)


def test_sdpa_backends_on_cpu_run_and_agree_with_the_course():
    available = scale.sdpa_backends("cpu")
    assert "math" in available and set(available) <= set(scale.SDPA_BACKENDS)
    q, k, v = (torch.randn(1, 2, 9, 16) for _ in range(3))
    ours, _ = scaled_dot_product_attention(q, k, v)
    for name in available:
        assert torch.allclose(scale.sdpa_with_backend(q, k, v, name), ours, atol=1e-5)
    assert torch.allclose(scale.sdpa_with_backend(q, k, v, "math", is_causal=True),
                          scaled_dot_product_attention(q, k, v, mask=causal_mask(9))[0], atol=1e-5)
    if "efficient" not in available:
        with pytest.raises(RuntimeError):
            scale.sdpa_with_backend(q, k, v, "efficient")
    with pytest.raises(ValueError, match="unknown SDPA back-end"):
        scale.sdpa_with_backend(q, k, v, "fastest")


def test_attention_implementations_all_give_the_same_output():
    impls = scale.attention_implementations("cpu", block_size=5)
    assert {"course", "blockwise", "sdpa: math"} <= set(impls)
    q, k, v = (torch.randn(1, 2, 11, 8) for _ in range(3))
    reference = F.scaled_dot_product_attention(q, k, v)
    for name, fn in impls.items():
        assert torch.allclose(fn(q, k, v), reference, atol=1e-5), name


def test_benchmark_attention_measures_every_implementation_at_every_length():
    impls = {"a": lambda q, k, v: q + 0, "b": lambda q, k, v: q @ k.transpose(-2, -1)}
    rows = scale.benchmark_attention([4, 8], heads=1, d_k=2, implementations=impls, repeats=1)
    assert [(r.implementation, r.length) for r in rows] == [("a", 4), ("b", 4), ("a", 8), ("b", 8)]
    assert all(r.seconds >= 0 and r.peak_bytes is None for r in rows)
    with pytest.raises(ValueError, match="at least one"):
        scale.benchmark_attention([], implementations=impls)
    with pytest.raises(ValueError, match="length"):
        scale.benchmark_attention([0], implementations=impls)


def test_scaling_exponent_recovers_a_power_law():
    lengths = [128, 256, 512, 1024]
    assert scaling_exponent(lengths, [3e-9 * t ** 2 for t in lengths]) == pytest.approx(2.0)
    assert scaling_exponent(lengths, [5e-6 * t for t in lengths]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two"):
        scaling_exponent([1], [1.0])
    with pytest.raises(ValueError, match="positive"):
        scaling_exponent([1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="all be equal"):
        scaling_exponent([4, 4], [1.0, 2.0])


def test_benchmark_table_gives_milliseconds_and_speed_ups_over_the_baseline():
    rows = [BenchmarkRow("course", 128, 0.004, None), BenchmarkRow("fast", 128, 0.001, None),
            BenchmarkRow("course", 256, 0.016, None)]
    text = scale.benchmark_table(rows)
    lines = text.splitlines()
    assert "course" in lines[0] and "fast" in lines[0]
    assert "4.00" in lines[1] and "1.00 ( 4.0x)" in lines[1]
    assert lines[2].split()[-1] == "-"  # "fast" was not measured at 256


def test_device_label_names_the_cpu_threads():
    threads = torch.get_num_threads()
    assert scale.device_label("cpu") == f"CPU, {threads} thread" + ("s" if threads > 1 else "")


def test_benchmark_records_round_trip_and_are_found(tmp_path):
    rows = [BenchmarkRow("course", 128, 0.5, None), BenchmarkRow("sdpa: flash", 128, 0.1, 2048)]
    path = scale.save_benchmark(rows, tmp_path / "attention_gpu_test.json", device="GPU: test", dtype="float16")
    settings, loaded = scale.load_benchmark(path)
    assert loaded == rows and settings["device"] == "GPU: test" and settings["torch"] == torch.__version__
    (tmp_path / "other.json").write_text("{}")  # not an attention_*.json record: ignored
    found = scale.recorded_benchmarks(tmp_path)
    assert [(p.name, s["dtype"]) for p, s, _ in found] == [("attention_gpu_test.json", "float16")]
    (tmp_path / "attention_broken.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="attention_broken.json"):
        scale.recorded_benchmarks(tmp_path)
    with pytest.raises(ValueError, match="no benchmark rows"):
        scale.save_benchmark([], tmp_path / "x.json")
    assert scale.recorded_benchmarks(tmp_path / "missing") == []


def test_no_records_are_committed_by_accident():
    # data/benchmarks/ holds only records measured with `python -m course_lib.benchmark attention --record`
    for path, settings, rows in scale.recorded_benchmarks():
        assert settings["device"] and rows, path


# --- the translation model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return Seq2SeqTransformer(30, 30, d_model=16, h=2, num_encoder_layers=1, num_decoder_layers=2, d_ff=32,
                              dropout=0.0, share_embeddings=True).eval()


def test_profile_parts_times_every_part_and_adds_up(tiny_model):
    src, tgt = torch.randint(4, 30, (3, 7)), torch.randint(4, 30, (3, 5))
    calls = []

    def run():
        calls.append(1)
        with torch.no_grad():
            tiny_model(src, tgt)

    parts = scale.profile_parts(tiny_model, run, repeats=2)
    assert list(parts) == list(scale.PROFILE_PARTS) and len(calls) == 3  # one warm-up, two timed
    assert all(v >= 0 for v in parts.values())
    for name in ("attention projections", "attention core", "feed-forward", "output layer", "embeddings"):
        assert parts[name] > 0, name
    # the hooks are gone afterwards
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny_model.modules())


def test_part_names_follow_the_model():
    assert scale._part_of("transformer.decoder_layers.1.cross_attn.w_k") == "attention projections"
    assert scale._part_of("transformer.decoder_layers.1.cross_attn") == "attention"
    assert scale._part_of("transformer.encoder_layers.0.ff") == "feed-forward"
    assert scale._part_of("transformer.encoder_layers.0.ff.linear1") is None  # inside ff: counted there
    assert scale._part_of("transformer.encoder_norm") == "layer norms"
    assert scale._part_of("out") == "output layer" and scale._part_of("src_embed") == "embeddings"


def test_operator_table_lists_pytorch_operators(capfd, tiny_model):
    src = torch.randint(4, 30, (2, 5))
    table = scale.operator_table(lambda: tiny_model.encode(src), row_limit=5)
    assert "Name" in table and "aten::" in table
    assert "profiler_start" not in capfd.readouterr().err


def test_decode_step_times_covers_every_step_and_restores_the_mode(tiny_model):
    src, tokens = torch.randint(4, 30, (2, 6)), torch.randint(4, 30, (2, 9))
    tiny_model.train()
    without, cached = scale.decode_step_times(tiny_model, src, tokens, repeats=1)
    assert len(without) == len(cached) == 9 and all(t > 0 for t in without + cached)
    assert tiny_model.training
    tiny_model.eval()
    with pytest.raises(ValueError, match="tokens"):
        scale.decode_step_times(tiny_model, src, torch.randint(4, 30, (3, 9)))


# --- figures ---------------------------------------------------------------------------------------

def test_figures_draw_what_they_are_given():
    import matplotlib.pyplot as plt

    rows = [BenchmarkRow(n, t, s * t ** 2, None) for n, s in (("course", 1e-8), ("fast", 2e-9)) for t in (128, 256, 512)]
    fig = scale.plot_scaling(rows, "title")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["course", "fast", "∝ T^2"]
    assert ax.get_xscale() == "log" and ax.get_title() == "title"
    plt.close(fig)
    fig = scale.plot_profile({"a": 1.0, "b": 3.0}, "profile")
    assert [t.get_text() for t in fig.axes[0].texts] == ["75%", "25%"]  # drawn bottom-up: b then a
    plt.close(fig)
    fig = scale.plot_step_times([0.1, 0.2], [0.1, 0.1], "steps")
    assert list(fig.axes[1].lines[0].get_ydata()) == pytest.approx([0.1, 0.3])
    plt.close(fig)
    with pytest.raises(ValueError):
        scale.plot_scaling([], "x")
    with pytest.raises(ValueError):
        scale.plot_profile({"a": 0.0}, "x")
    with pytest.raises(ValueError):
        scale.plot_step_times([0.1], [], "x")


def test_plot_online_softmax_shows_the_running_and_the_final_weights():
    import matplotlib.pyplot as plt

    scores = torch.tensor([0.5, 1.5, -0.5, 1.0, 3.0, 0.0, 2.0])
    fig = scale.plot_online_softmax(scores, block_size=3, blocks_seen=1)
    left, right = fig.axes
    assert left.get_title() == "3 of 7 keys seen" and "m = 1.5" in left.get_legend().get_texts()[0].get_text()
    running = [bar.get_height() for bar in right.patches[:7]]
    assert torch.allclose(torch.tensor(running[:3], dtype=torch.float32), torch.softmax(scores[:3], dim=0))
    assert running[3:] == [0.0] * 4  # keys not seen yet have no weight so far
    final = [bar.get_height() for bar in right.patches[7:]]
    assert torch.allclose(torch.tensor(final, dtype=torch.float32), torch.softmax(scores, dim=0))
    assert "3 block(s) seen" in scale.plot_online_softmax(scores, 3, 10)._suptitle.get_text()  # capped at the last
    with pytest.raises(ValueError, match="block_size"):
        scale.plot_online_softmax(scores, block_size=0)
    with pytest.raises(ValueError, match="scores"):
        scale.plot_online_softmax(scores[None], 3, 1)
    plt.close("all")
