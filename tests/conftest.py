"Fixtures shared by the test files (the stand-in worlds and oracle SAEs live in `synthsae.fixtures`)"
import pytest, torch
from synthsae.model import SyntheticModel


@pytest.fixture(scope='module')
def tiny()->SyntheticModel:
    "The tiny preset's world, built once per test module (tests read it and never change it)"
    return SyntheticModel.from_preset('tiny')


@pytest.fixture
def one_thread():
    "Torch on one thread for a test (oversubscribed cores make multi-threaded small ops 10× slower); restored after"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
