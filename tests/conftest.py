"""Shared test configuration.

Property tests run derandomised by default so that a clean clone tests exactly
the same examples every time; set ``HYPOTHESIS_PROFILE=explore`` to search
with fresh random examples (and a larger budget) instead.
"""

from __future__ import annotations

import os

from fakes import exp_file, fake, interrupted_simulations  # noqa: F401  (fixtures for every test module)
from hypothesis import settings

settings.register_profile("default", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
