"""A method's settings are typed: mypy flags a misspelled key of a method's section, and library code cannot reach a
method's sections through the untyped shortcut ``cfg.loss``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def _mypy(tmp_path: Path, source: str) -> tuple[int, str]:
    api = pytest.importorskip("mypy.api", reason="mypy is in the lint extra")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(source))
    out, err, status = api.run([
        str(snippet), "--config-file", str(PROJECT / "pyproject.toml"), "--cache-dir", str(PROJECT / ".mypy_cache"),
        "--no-error-summary",
    ])  # fmt: skip
    return status, out + err


@pytest.mark.slow
def test_a_misspelled_section_key_fails_the_type_check(tmp_path: Path) -> None:
    status, said = _mypy(
        tmp_path,
        """
        from invprop.config import Config
        from invprop.methods.contrastive.simclr import SimCLRSettings
        from invprop.methods.memory_bank.invp import InvPSettings

        def tau(settings: InvPSettings) -> float:
            return settings.loss.temprature

        def nce(settings: SimCLRSettings) -> float:
            return settings.temprature

        def through_the_config(cfg: Config) -> float:
            return cfg.loss.temperature

        from invprop.methods import MethodSpec
        from invprop.methods.clustering.pcl import PCLSettings

        SPEC = MethodSpec("x", PCLSettings, preflight=lambda settings: print(settings.kmenas))
    """,
    )
    assert status == 1, said
    assert '"LossSettings" has no attribute "temprature"' in said
    assert '"SimCLRSettings" has no attribute "temprature"' in said
    assert '"Config" has no attribute "loss"' in said
    assert '"PCLSettings" has no attribute "kmenas"' in said  # a spec's hooks are typed by its settings


@pytest.mark.slow
def test_the_same_keys_spelled_right_pass(tmp_path: Path) -> None:
    status, said = _mypy(
        tmp_path,
        """
        from invprop.methods.contrastive.simclr import SimCLRSettings
        from invprop.methods.memory_bank.invp import InvPSettings

        def tau(settings: InvPSettings) -> float:
            return settings.loss.temperature

        def nce(settings: SimCLRSettings) -> float:
            return settings.temperature
    """,
    )
    assert status == 0, said
