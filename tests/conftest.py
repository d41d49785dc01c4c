"""Fixtures shared by the unit tests (the repository's conftest.py sets up the notebook kernels)."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the machine's other core stays free."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
