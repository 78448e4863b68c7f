"""Fixtures shared by the engine tests (model builders live in builders.py)."""
import pytest

from builders import SMALL_KINDS


@pytest.fixture(params=SMALL_KINDS)
def small_kind(request):
    return request.param
