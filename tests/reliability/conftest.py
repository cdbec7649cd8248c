# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""pytest set-up for tests/reliability: the checkout as ansible_collections.kubespan.mesh, fuzz budget.

RELIABILITY_FUZZ_EXAMPLES sets hypothesis's max_examples per fuzz test (default 300; scripts/reliability.sh
uses 300 in --quick and 3000 in --full).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _project  # noqa: E402,F401  # pylint: disable=unused-import,wrong-import-position
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "reliability",
    max_examples=int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    derandomize=os.environ.get("RELIABILITY_FUZZ_DERANDOMIZE", "") == "1",
)
settings.load_profile("reliability")
