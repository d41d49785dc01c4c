import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_lib.softmax import entropy, log_softmax, logsumexp, naive_softmax, plot_weights, softmax, softmax_jacobian

INF = float("inf")
NAN = float("nan")


def close(a, b, **kw):
    return torch.allclose(a, b, equal_nan=True, **kw)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# Inputs where a naive formula fails and torch's built-ins are the independent reference.
EXTREME = {
    "small": torch.tensor([2.0, 1.0, 0.1]),
    "large": torch.tensor([1000.0, 1001.0, 1002.0]),
    "very negative": torch.tensor([-1000.0, -1001.0, -1002.0]),
    "plus and minus 1e4": torch.tensor([1e4, -1e4, 0.0, 1e4 - 1]),
    "a -inf entry": torch.tensor([0.5, -INF, 1.5]),
    "all equal": torch.full((5,), 7.0),
    "single element": torch.tensor([-3.0]),
    "all -inf": torch.tensor([-INF, -INF]),
    "a +inf entry": torch.tensor([INF, 0.0]),
    "a NaN entry": torch.tensor([NAN, 1.0]),
}


@pytest.mark.parametrize("name", EXTREME)
def test_softmax_log_softmax_logsumexp_agree_with_torch(name):
    x = EXTREME[name]
    assert close(softmax(x), torch.softmax(x, dim=-1))
    assert close(log_softmax(x), torch.log_softmax(x, dim=-1))
    assert close(logsumexp(x), torch.logsumexp(x, dim=-1))


def test_known_values():
    x = torch.tensor([0.0, math.log(3.0)])
    assert close(softmax(x), torch.tensor([0.25, 0.75]))
    assert close(logsumexp(x), torch.tensor(math.log(4.0)))
    assert close(log_softmax(torch.tensor([0.0, -200.0])), torch.tensor([0.0, -200.0]))
    assert torch.equal(softmax(torch.full((4,), 2.0)), torch.full((4,), 0.25))
    assert torch.equal(softmax(torch.tensor([5.0])), torch.tensor([1.0]))


def test_naive_softmax_works_on_small_scores_and_fails_on_large_ones():
    x = torch.tensor([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]])
    assert close(naive_softmax(x), torch.softmax(x, dim=-1))
    assert torch.isnan(naive_softmax(torch.tensor([1000.0, 1001.0, 1002.0]))).all()
    assert torch.isnan(naive_softmax(torch.tensor([-1000.0, -1001.0, -1002.0]))).all()


def test_all_minus_inf_row_is_nan_and_other_rows_are_unaffected():
    x = torch.tensor([[-INF, -INF, -INF], [1.0, 2.0, -INF]])
    p = softmax(x)
    assert torch.isnan(p[0]).all()
    assert close(p[1], torch.softmax(x[1], dim=-1)) and p[1, 2] == 0
    assert torch.isnan(log_softmax(x)[0]).all()
    assert logsumexp(x)[0] == -INF


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
def test_every_axis_of_a_3d_tensor(dim):
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)) * 30
    assert close(softmax(x, dim=dim), torch.softmax(x, dim=dim), atol=1e-6)
    assert close(log_softmax(x, dim=dim), torch.log_softmax(x, dim=dim), atol=1e-5)
    assert close(logsumexp(x, dim=dim), torch.logsumexp(x, dim=dim))
    assert close(logsumexp(x, dim=dim, keepdim=True), torch.logsumexp(x, dim=dim, keepdim=True))


def test_float64_and_float16_keep_their_dtype():
    for dtype in (torch.float64, torch.float16):
        x = torch.tensor([1.0, 2.0, 3.0], dtype=dtype)
        assert softmax(x).dtype == dtype and log_softmax(x).dtype == dtype
        assert close(softmax(x).double(), torch.softmax(x.double(), -1), atol=1e-3)


@pytest.mark.parametrize("temperature", [0.01, 0.5, 2, 100.0, torch.tensor(3.0)])
def test_temperature_divides_the_scores(temperature):
    x = torch.tensor([[5.0, 4.0, 0.0], [1.0, 2.0, 3.0]])
    t = float(temperature)
    assert close(softmax(x, temperature=temperature), torch.softmax(x / t, dim=-1))
    assert close(log_softmax(x, temperature=temperature), torch.log_softmax(x / t, dim=-1), atol=1e-5)


def test_temperature_limits():
    x = torch.tensor([1.0, 3.0, 2.0])
    assert torch.allclose(softmax(x, temperature=1e-3), torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(softmax(x, temperature=1e4), torch.full((3,), 1 / 3), atol=1e-4)
    # a tie at the top splits the weight equally even as τ -> 0
    assert torch.allclose(softmax(torch.tensor([2.0, 2.0, 0.0]), temperature=1e-3), torch.tensor([0.5, 0.5, 0.0]))


@pytest.mark.parametrize("temperature, error, message", [
    (0, ValueError, "positive finite number, got 0.0"),
    (-1.5, ValueError, "got -1.5"),
    (INF, ValueError, "got inf"),
    (NAN, ValueError, "got nan"),
    ("2", TypeError, "temperature must be a positive number, got '2'"),
    (True, TypeError, "got True"),
    (None, TypeError, "got None"),
])
def test_bad_temperatures_raise_naming_the_value(temperature, error, message):
    for fn in (softmax, log_softmax):
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            fn(torch.zeros(3), temperature=temperature)


@pytest.mark.parametrize("fn", [naive_softmax, softmax, log_softmax, logsumexp])
def test_bad_scores_raise(fn):
    with pytest.raises(TypeError, match="expected a floating-point tensor, got dtype torch.int64"):
        fn(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="expected a torch tensor, got ndarray"):
        fn(np.zeros(3))
    with pytest.raises(TypeError, match="expected a torch tensor, got list"):
        fn([1.0, 2.0])
    with pytest.raises(ValueError, match="0-d tensor"):
        fn(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"dim=2 is out of range for x of shape \(2, 3\)"):
        fn(torch.zeros(2, 3), dim=2)
    with pytest.raises(ValueError, match="empty axis"):
        fn(torch.zeros(2, 0))


def test_gradient_of_softmax_matches_torch():
    x = torch.tensor([2.0, 1.0, 0.1], requires_grad=True)
    w = torch.tensor([1.0, -2.0, 0.5])
    (softmax(x) * w).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    (torch.softmax(x, -1) * w).sum().backward()
    assert torch.allclose(ours, x.grad)


def test_softmax_jacobian_matches_autograd():
    x = torch.tensor([2.0, 1.0, 0.1, -1.0], dtype=torch.float64)
    expected = torch.autograd.functional.jacobian(lambda s: torch.softmax(s, -1), x)
    J = softmax_jacobian(torch.softmax(x, -1))
    assert J.shape == (4, 4) and torch.allclose(J, expected)
    assert torch.allclose(J, J.T) and torch.allclose(J.sum(dim=1), torch.zeros(4, dtype=torch.float64))


def test_softmax_jacobian_batched_and_saturated():
    p = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(1)), -1)
    J = softmax_jacobian(p)
    assert J.shape == (5, 3, 3)
    for b in range(5):
        assert torch.allclose(J[b], torch.diag(p[b]) - torch.outer(p[b], p[b]))
    assert torch.equal(softmax_jacobian(torch.tensor([0.0, 1.0, 0.0])), torch.zeros(3, 3))
    uniform = softmax_jacobian(torch.full((2,), 0.5))
    assert torch.allclose(uniform, torch.tensor([[0.25, -0.25], [-0.25, 0.25]]))


@pytest.mark.parametrize("p, message", [
    (torch.tensor(0.5), "0-d tensor"),
    (torch.tensor([2.0, 1.0, 0.1]), "does not sum to 1"),
    (torch.tensor([1.5, -0.5]), "negative entries"),
    (torch.tensor([NAN, 1.0]), "contains NaN"),
    (torch.tensor([1, 0]), "floating-point"),
    (torch.zeros(0), "empty axis"),
])
def test_softmax_jacobian_refuses_non_probabilities(p, message):
    with pytest.raises((ValueError, TypeError), match=message):
        softmax_jacobian(p)


def test_entropy():
    h = entropy(torch.tensor([0.0, 1.0, 0.0]))
    assert h == 0 and not torch.signbit(h)  # prints as 0.0000, not -0.0000
    assert torch.isclose(entropy(torch.full((4,), 0.25)), torch.tensor(math.log(4)))
    p = torch.tensor([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    by_hand = torch.tensor([-sum(v * math.log(v) for v in row) for row in p.tolist()])
    assert torch.allclose(entropy(p), by_hand)
    assert torch.allclose(entropy(p.T, dim=0), by_hand)
    with pytest.raises(ValueError, match="does not sum to 1"):
        entropy(torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="contains NaN"):
        entropy(softmax(torch.tensor([-INF, -INF])))


def test_plot_weights():
    ax = plot_weights(torch.tensor([0.2, 0.3, 0.5]), labels=["a", "b", "c"], title="three")
    assert ax.get_title() == "three" and len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert {t.get_text() for t in ax.texts} == {"0.20", "0.30", "0.50"}
    with pytest.raises(ValueError, match="expected 3 names"):
        plot_weights(torch.tensor([0.2, 0.3, 0.5]), labels=["a"])
    with pytest.raises(ValueError, match="expected 1 axes"):
        plot_weights(torch.ones(2, 2) / 2)
