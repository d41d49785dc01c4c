"""Source batches for the decoding tests (test_decoding.py, test_kv_cache.py)."""
import random

import torch

from course_lib.tokenizer import EOS_ID, PAD_ID


def batch(rows, width=None):
    """Right-pad id lists with PAD into a (B, S) long tensor."""
    width = width or max(len(r) for r in rows)
    src = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        src[i, :len(row)] = torch.tensor(row)
    return src


def random_sources(vocab, count, seed, lengths=(1, 6)):
    """``count`` random sources of ids 3..vocab-1 (no PAD, BOS or EOS inside), each ending in EOS."""
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(*lengths))] + [EOS_ID] for _ in range(count)]
