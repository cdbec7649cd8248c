# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The kubespan.mesh.agent_bundle lookup (controller side): the node agent's zipapp of module_utils, built once."""

from __future__ import annotations

import base64
import io
import zipfile

from ansible_collections.kubespan.mesh.plugins.lookup.agent_bundle import LookupModule


def test_agent_bundle_lookup_returns_the_zipapp_of_module_utils_and_caches_it():
    first = LookupModule().run([], variables={})
    assert len(first) == 1
    data = base64.b64decode(first[0])
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        names = zipped.namelist()
    assert "__main__.py" in names and any(n.endswith("cli.py") for n in names)
    assert LookupModule().run([], variables={})[0] is first[0], "built once per controller process"
