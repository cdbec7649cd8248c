# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The identity options are documented once for both modules: the two strings of the doc fragment (ansible-test wants
plain strings) say the same, and say what the argument spec does (types, choices, defaults)."""

from __future__ import annotations

import yaml

from ansible_collections.kubespan.mesh.plugins.doc_fragments.identity import ModuleDocFragment
from ansible_collections.kubespan.mesh.plugins.module_utils.host.requirements import identity_option_spec


def _top():
    return yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]


def _mesh():
    return yaml.safe_load(ModuleDocFragment.MESH)["options"]["identity"]["suboptions"]


def test_the_two_fragments_document_the_same_options_with_the_same_text():
    top = yaml.safe_dump(_top(), sort_keys=True)
    mesh = yaml.safe_dump(_mesh(), sort_keys=True).replace("O(identity.", "O(")
    assert mesh == top


def test_the_fragment_matches_the_argument_spec():
    spec = identity_option_spec()
    docs = _top()
    assert set(docs) == set(spec)
    for name, arg in spec.items():
        doc = docs[name]
        assert doc["type"] == arg["type"], name
        assert doc.get("elements") == arg.get("elements"), name
        assert doc.get("choices") == arg.get("choices"), name
        assert doc.get("default") == arg.get("default"), name
