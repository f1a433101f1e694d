"""The `>>>` examples in the package's docstrings run and hold."""

import doctest
import importlib
import pkgutil

import pytest

import torchrl_o3f

SLOW = {"torchrl_o3f.data.behavior"}  # runs a few MuJoCo episodes


def _modules() -> list:
    names = [m.name for m in pkgutil.walk_packages(torchrl_o3f.__path__, "torchrl_o3f.")]
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(names)]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_class_has_a_runnable_example():
    """Each class a package namespace exports carries a `>>>` example."""
    missing = []
    for pkg in ("envs", "modules", "objectives", "data", "trainers", "analysis"):
        module = importlib.import_module(f"torchrl_o3f.{pkg}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, Exception):
                continue  # errors are shown where they are raised
            if isinstance(obj, type) and ">>>" not in (obj.__doc__ or ""):
                missing.append(f"torchrl_o3f.{pkg}.{name}")
    assert not missing, f"public classes without an example: {missing}"
