"""python -m course_lib.benchmark: each command runs and prints ratios measured in the same run (no timed asserts)."""
import json
import re

import pytest
import torch

from course_lib import benchmark, scale

pytestmark = pytest.mark.usefixtures("one_thread")


def test_attention_command_prints_times_ratios_and_exponents(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "RECORDED_DIR", tmp_path)
    assert benchmark.main(["attention", "--device", "cpu", "--lengths", "16", "32", "--repeats", "1",
                           "--heads", "1", "--d-k", "8", "--record"]) == 0
    out = capsys.readouterr().out
    assert "attention on CPU" in out and "times faster than course" in out
    assert re.search(r"^\s+32\s+\d+\.\d+\s+\d+\.\d+ \(\s*\d+\.\dx\)", out, re.M), out
    record = next(tmp_path.glob("attention_cpu_*.json"))
    settings, rows = scale.load_benchmark(record)
    assert settings["heads"] == 1 and {r.length for r in rows} == {16, 32}


def test_attention_command_fits_an_exponent_from_512_up(capsys):
    assert benchmark.main(["attention", "--device", "cpu", "--lengths", "512", "1024", "--repeats", "1",
                           "--heads", "1", "--d-k", "8", "--skip", "blockwise"]) == 0
    out = capsys.readouterr().out
    assert "scaling exponent" in out and "blockwise" not in out
    assert re.search(r"course: -?\d+\.\d\d", out)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        benchmark.main(["attention", "--dtype", "float64"])
    with pytest.raises(SystemExit):
        benchmark.main(["--threads", "0", "attention"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            benchmark.main(["attention", "--device", "cuda"])


@pytest.fixture
def needs_data():
    from course_lib.data import load_split
    try:
        load_split("val")
    except Exception as exc:  # noqa: BLE001 - no mirror and no network
        pytest.skip(f"Multi30k is not available here: {exc}")


def test_kv_cache_command_reports_identical_outputs_and_a_speed_up(capsys, needs_data):
    assert benchmark.main(["kv-cache", "--device", "cpu", "--sentences", "3", "--beam-size", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"greedy: without cache .* s, with cache .* s: \d+\.\dx faster, identical outputs", out)
    assert "beam 2:" in out


def test_profile_command_lists_every_part(capsys, needs_data):
    assert benchmark.main(["profile", "--device", "cpu", "--sentences", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for part in scale.PROFILE_PARTS:
        assert part in out
    shares = [float(x) for x in re.findall(r"(\d+\.\d)%", out)]
    assert sum(shares) == pytest.approx(100, abs=0.5)
