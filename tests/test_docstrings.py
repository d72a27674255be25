"""The ``Example:`` blocks of the library's docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import invprop

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(invprop.__path__, "invprop.") if not name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    if name == "invprop.core.faiss_search":
        pytest.importorskip("faiss")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"
