"""Make the checkout importable as ansible_collections.kubespan.mesh for plain pytest runs.

ansible-test units already provides that layout; this only helps `pytest tests/unit` from a checkout.
"""

import os
import sys

try:
    import ansible_collections.kubespan.mesh  # noqa: F401  # pylint: disable=unused-import
except ImportError:
    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _base = os.path.join(_root, "build", "unit-path")
    _link = os.path.join(_base, "ansible_collections", "kubespan", "mesh")
    if not os.path.islink(_link):
        os.makedirs(os.path.dirname(_link), exist_ok=True)
        os.symlink(_root, _link)
    sys.path.insert(0, _base)
    for _name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[_name]
