"Fixtures shared by the test files (the stand-in worlds and oracle SAEs live in `synthsae.fixtures`)"
import pytest
from synthsae.model import SyntheticModel


@pytest.fixture(scope='module')
def tiny()->SyntheticModel:
    "The tiny preset's world, built once per test module (tests read it and never change it)"
    return SyntheticModel.from_preset('tiny')
