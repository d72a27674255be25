"""The ``Example:`` blocks of the library's docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import invprop

ALL_MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(invprop.__path__, "invprop.") if not name.endswith("__main__")
)


def _has_examples(name: str) -> bool:
    module = importlib.import_module(name)
    return any(test.examples for test in doctest.DocTestFinder(exclude_empty=True).find(module))


#: Modules with at least one example; every one of them is run below, and each run must attempt something.
MODULES = [name for name in ALL_MODULES if _has_examples(name)]


def test_the_modules_with_examples_are_found() -> None:
    assert {
        "invprop.core.bank",
        "invprop.core.invp_losses",
        "invprop.registry",
        "invprop.methods.spec",
        "invprop.methods.method",
        "invprop.settings",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    if name == "invprop.core.faiss_search":
        pytest.importorskip("faiss")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no example that ran"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"
