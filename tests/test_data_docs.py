"""The `>>>` examples of torchrl_o3f.data run and hold."""

import doctest
import importlib

import pytest

MODULES = [
    pytest.param("behavior", marks=pytest.mark.slow),  # runs a few MuJoCo episodes
    "builder",
    "loader",
    "pointmaze",
    "scores",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"torchrl_o3f.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
