# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Controller support matrix of kubespan.mesh (nox).

    nox -s sanity                      # ansible-test sanity with the oldest and the newest supported ansible-core
    nox -s "sanity(ansible_core='2.17')"
    nox -s sanity -- --head            # the committed tree of HEAD only, as a fresh clone (CI) sees it
    nox -s docs                        # antsibull-docs lint of the collection's documentation

Supported ansible-core versions: 2.17, 2.18 and 2.19 (meta/runtime.yml: requires_ansible >=2.17.0). The
matrix tests the oldest (2.17) and the newest that installs on this machine's Python 3.11 (2.19; 2.20
needs Python 3.12). 2.18 lies between the two and is not run separately.

Each sanity session installs one ansible-core into its own virtualenv, copies the files git would commit
into <tmp>/ansible_collections/kubespan/mesh (ansible-test needs that layout; tests/gates.sh does the
same) and runs `ansible-test sanity --venv --python 3.11` there. ansible-test bootstraps pip with a
get-pip.py from a host that is not reachable here; as in tests/gates.sh, a stand-in seeded from ensurepip
is written to ~/.ansible/test/cache/get_pip_<version>.py (same text and marker as gates.sh's, so the two
never fight over it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYTHON = "3.11"
# Oldest and newest supported ansible-core that install on Python 3.11.
ANSIBLE_CORE = ["2.17", "2.19"]

nox.options.sessions = ["sanity", "docs"]
nox.options.reuse_existing_virtualenvs = True
# Inside build/ (git-ignored, never in the tarball), not .nox/ in the checkout.
nox.options.envdir = str(ROOT / "build" / "nox")
nox.options.error_on_missing_interpreters = True

GET_PIP_STAND_IN = '''"""kubespan.mesh get-pip stand-in (written by tests/gates.sh).

ansible-test downloads get-pip.py from ci-files.testing.ansible.com, which the test machines cannot
reach. This seeds pip from the interpreter's own ensurepip, then lets that pip install what get-pip.py
was asked for (a pinned pip) from the package index.
"""
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call(pip + ["install"] + args)
# ensurepip of Python < 3.12 also brings setuptools, which get-pip.py --no-setuptools would not.
if "--no-setuptools" in sys.argv[1:]:
    subprocess.check_call(pip + ["uninstall", "-y", "setuptools"])
'''


def _ansible_test_pip_version(session: nox.Session) -> str:
    """The pip version this session's ansible-test bootstraps in its virtualenvs."""
    code = "import ansible_test, os; print(os.path.dirname(ansible_test.__file__))"
    base = session.run("python", "-c", code, silent=True).strip().splitlines()[-1]
    text = Path(base, "_internal", "python_requirements.py").read_text(encoding="utf-8")
    match = re.search(r"^\s*pip='([0-9.]+)',$", text, re.M)
    if not match:
        session.error("cannot find the pip version ansible-test bootstraps")
    return match.group(1)


def _ensure_get_pip_stand_in(version: str) -> None:
    cache = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    if cache.exists() and "kubespan.mesh get-pip stand-in" not in cache.read_text(encoding="utf-8"):
        return  # a real get-pip.py someone saved: keep it
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.exists() or cache.read_text(encoding="utf-8") != GET_PIP_STAND_IN:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(GET_PIP_STAND_IN, encoding="utf-8")
        os.replace(tmp, cache)


def _copy_tree(dest: Path, head_only: bool = False) -> None:
    """Copy the files git tracks or would track (untracked work included, ignored files left out).

    With head_only, the committed tree of HEAD instead (what a fresh CI clone sees).
    """
    if head_only:
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-C", str(dest), "-xf", "-"], input=archive, check=True)
        return
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = ROOT / rel
        if not src.exists() or src.is_dir():
            continue  # tracked but deleted in the work tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


@nox.session(python=PYTHON)
@nox.parametrize("ansible_core", ANSIBLE_CORE)
def sanity(session: nox.Session, ansible_core: str) -> None:
    """ansible-test sanity of the collection with one ansible-core version (`-- --head`: HEAD only)."""
    session.install(f"ansible-core=={ansible_core}.*")
    session.run("ansible", "--version")
    _ensure_get_pip_stand_in(_ansible_test_pip_version(session))
    if shutil.which("shellcheck") is None:
        session.error("shellcheck is missing (apt-get install shellcheck): ansible-test would skip that test")
    with tempfile.TemporaryDirectory(prefix="kubespan-nox-") as tmp:
        copy = Path(tmp, "ansible_collections", "kubespan", "mesh")
        _copy_tree(copy, head_only="--head" in session.posargs)
        session.chdir(copy)
        session.run("ansible-test", "sanity", "--venv", "--python", PYTHON, "--color", "no",
                    env={"NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1"})
        session.chdir(ROOT)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """antsibull-docs lint-collection-docs (plugin docs, role argument specs, changelog, RST in docs)."""
    session.install("ansible-core==2.19.*", "antsibull-docs", "antsibull-changelog")
    session.run("bash", str(ROOT / "tests" / "installed" / "docs-lint.sh"), external=True)
