"""The nbval sanitize patterns mask what varies between runs, and nothing that matters."""
import configparser
import re
from pathlib import Path

import pytest

CFG = Path(__file__).resolve().parent.parent / "nbval_sanitize.cfg"


def sanitize(text: str) -> str:
    parser = configparser.ConfigParser()
    parser.read(CFG, encoding="utf-8")
    for section in parser.sections():
        text = re.sub(parser[section]["regex"], parser[section]["replace"], text)
    return text


@pytest.mark.parametrize("a, b", [
    ("<Foo object at 0x7f3a2b1c9d40>", "<Foo object at 0x7f00deadbeef>"),
    ("epoch 1: 100%|██████████| 50/50 [00:12<00:00,  4.02it/s]", "epoch 1: 100%|██████████| 50/50 [00:10<00:00,  4.97it/s]"),
    ("trained at 1,234.5 tokens/s", "trained at 987.0 tokens/s"),
    ("took 0.53 s", "took 12.1 s"),
    ("one step: 12 ms", "one step: 9.5 ms"),
])
def test_varying_parts_are_masked(a, b):
    assert sanitize(a) == sanitize(b)


@pytest.mark.parametrize("a, b", [
    ("tensor([0.5000, 0.2500])", "tensor([0.5000, 0.2501])"),
    ("BLEU = 35.12", "BLEU = 35.13"),
    ("loss 2.3014", "loss 2.3015"),
    ("x: (B=2, T=5, d_model=8)", "x: (B=2, T=6, d_model=8)"),
    ("50/50", "49/50"),
])
def test_meaningful_numbers_are_compared(a, b):
    assert sanitize(a) != sanitize(b)
