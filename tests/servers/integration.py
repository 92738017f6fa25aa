"""What a test does when an outside server it needs is not installed: skip locally, fail in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_INTEGRATION_ENV = "PREFIX_REGISTRY_REQUIRE_INTEGRATION"


def missing_server(problem: BaseException, install_hint: str) -> NoReturn:
    """Skip the test, or fail it when PREFIX_REGISTRY_REQUIRE_INTEGRATION=1 (CI installs every server)."""
    if os.environ.get(REQUIRE_INTEGRATION_ENV) == "1":
        pytest.fail(f"{problem} ({REQUIRE_INTEGRATION_ENV}=1 requires it; {install_hint})")
    pytest.skip(f"{problem} ({install_hint} to run this test)")
