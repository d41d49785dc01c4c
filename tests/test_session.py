import os

import numpy as np
import pytest
import torch

from course_lib import assert_claims, environment_report, pick_device, seed_everything, setup
from course_lib.session import cpu_model
from course_lib.session import DEVICE_ENV


def test_setup_is_reproducible(capsys):
    setup(seed=7, quiet=True)
    a = (torch.randn(4), np.random.rand(3))
    setup(seed=7, quiet=True)
    b = (torch.randn(4), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    setup(seed=8, quiet=True)
    assert not torch.equal(torch.randn(4), a[0])
    assert capsys.readouterr().out == ""


def test_setup_fixes_threads_print_options_and_style(capsys):
    import matplotlib

    device = setup(threads=1, device="cpu")
    assert torch.get_num_threads() == 1
    assert device == torch.device("cpu")
    assert repr(torch.tensor([1 / 3])) == "tensor([0.3333])"
    assert repr(torch.tensor([1e-8])) == "tensor([0.0000])"  # no scientific notation
    assert matplotlib.rcParams["axes.spines.top"] is False
    assert capsys.readouterr().out.strip() == "course_lib ready: seed 0, 1 CPU threads, device cpu"
    setup(quiet=True)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_setup_rejects_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="threads must be a positive int"):
        setup(threads=bad, quiet=True)


@pytest.mark.parametrize("bad", [-1, 0.5, None, True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(bad)


def test_seed_everything_accepts_large_seeds():
    seed_everything(2**40)  # NumPy's legacy seed only takes 32 bits; it is reduced, not refused


def test_pick_device_reads_environment(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, " CPU ")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "gpu")
    with pytest.raises(ValueError, match=r"\$COURSE_DEVICE must be one of auto, cpu, cuda, mps; got 'gpu'"):
        pick_device()


def test_pick_device_argument_beats_environment(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "nonsense")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="preference must be one of"):
        pick_device("tpu")


def test_pick_device_auto_prefers_an_accelerator(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")


def test_pick_device_refuses_a_missing_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA was requested but torch.cuda.is_available"):
        pick_device("cuda")
    with pytest.raises(RuntimeError, match="MPS was requested"):
        pick_device("mps")


def test_environment_report_lists_versions_and_device():
    report = environment_report()
    assert report["torch"] == torch.__version__
    assert report["device chosen"] == pick_device().type
    assert report["CPU cores"] == str(os.cpu_count())
    assert report["CPU capability"] == torch.backends.cpu.get_cpu_capability()
    assert report["CPU"] == cpu_model() and cpu_model().strip()
    assert "torch" in repr(report) and "<table>" in report._repr_html_()
    with pytest.raises(KeyError):
        report["no such row"]


def test_assert_claims_prints_each_claim_that_holds(capsys):
    assert_claims({"two heads are enough": True, "loss below 0.05": torch.tensor(0.01) < 0.05})
    assert capsys.readouterr().out == "✓ two heads are enough\n✓ loss below 0.05\n"


def test_assert_claims_names_every_claim_that_fails_and_prints_nothing(capsys):
    with pytest.raises(AssertionError, match=r"this claim does not hold here: one head fails; BLEU above 10$"):
        assert_claims({"one head fails": False, "two heads work": True, "BLEU above 10": 3.2 > 10})
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("bad, message", [
    ({}, "non-empty dict"),
    ([("claim", True)], "non-empty dict"),
    ({3: True}, "the claim's text"),
    ({"every head": torch.tensor([True, False])}, r"one truth value.*\.all\(\) or \.any\(\)"),
])
def test_assert_claims_refuses_what_is_not_a_dict_of_claims(bad, message):
    with pytest.raises(TypeError, match=message):
        assert_claims(bad)


def test_cpu_model_reads_proc_cpuinfo_and_falls_back_to_the_platform(monkeypatch):
    import builtins
    import platform

    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    assert cpu_model() == "arm"
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert cpu_model() == "unknown"


def test_one_thread_sets_one_thread_and_restores_the_count_even_after_an_error():
    from course_lib import one_thread

    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with one_thread():
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
