"""Shared fixtures: the repository's params loaded once, and a way to vary them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.params import Params, parse_params

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["reliability_files"]


@pytest.fixture(scope="session")
def params_dict() -> dict[str, Any]:
    """params.yaml as a plain mapping (copy before changing)."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def params(params_dict: dict[str, Any]) -> Params:
    return parse_params(params_dict)


def replace_section(params: Params, section: str, **changes: Any) -> Params:
    """`params` with some keys of one section changed."""
    return dataclasses.replace(
        params, **{section: dataclasses.replace(getattr(params, section), **changes)}
    )
