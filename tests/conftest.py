import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_cpu_thread():
    """The test models are tiny: one thread is faster than several competing for a busy CPU, and
    CPU results repeat bit for bit only at a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
