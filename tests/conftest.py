"""Shared fixtures: where the real alert data of ../shared/data lives."""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("BROKER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared(*parts):
    """Path under ../shared/data, or skip the test when that data is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: ../shared/data/{'/'.join(parts)} is absent")
    return path


@pytest.fixture
def shared_data():
    return require_shared()
