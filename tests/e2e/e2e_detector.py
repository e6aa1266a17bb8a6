"""A model-based injection detector plug-in (policies/injection.yaml `model_detector`) that breaks on demand.

Loaded by the server from INTERLOCK_POLICY_DIR's injection.yaml, so a test can make a guard raise or hang
from outside the process: text containing RAISE_MARKER makes `score` raise, HANG_MARKER makes it sleep past
the guard timeout. Any other text scores 0.0, so the guards otherwise behave as shipped.
"""

from __future__ import annotations

import time

RAISE_MARKER = "e2e-guard-raise"
HANG_MARKER = "e2e-guard-hang"
HANG_SECONDS = 8.0


class BreakableDetector:
    def score(self, text: str) -> float:
        lowered = text.lower()
        if RAISE_MARKER in lowered:
            raise RuntimeError("detector crashed")
        if HANG_MARKER in lowered:
            time.sleep(HANG_SECONDS)
        return 0.0


def factory(path: str) -> BreakableDetector:
    return BreakableDetector()
