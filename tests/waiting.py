"""Waiting in tests for what another thread or process brings about."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], within_s: float = 30.0) -> bool:
    """Poll `condition` until it holds (True) or `within_s` passes (False); not a timing assertion."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
