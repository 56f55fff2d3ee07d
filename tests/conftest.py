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


@pytest.fixture(autouse=True)
def stamp_classifier_switch(request, settings):
    """The stamp classifier (TensorFlow) joins the canvas only in tests marked ``stamp_classifier``,
    so the other tests do not pay for loading TensorFlow."""
    settings.STAMP_CLASSIFIER_ENABLED = request.node.get_closest_marker("stamp_classifier") is not None
