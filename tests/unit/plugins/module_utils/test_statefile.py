"""Atomic writes and the flat YAML reader/writer."""

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.host import statefile as sf


def test_atomic_write_replaces_and_sets_mode(tmp_path):
    path = str(tmp_path / "f")
    sf.atomic_write(path, b"one")
    sf.atomic_write(path, b"two")
    assert open(path, "rb").read() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ["f"]  # no temp files left


def test_atomic_write_failure_keeps_previous(tmp_path):
    path = str(tmp_path / "f")
    sf.atomic_write(path, b"old")
    with pytest.raises(sf.StateFileError, match="unchanged"):
        sf.atomic_write(str(tmp_path / "missing-dir" / "f"), b"new")
    assert open(path, "rb").read() == b"old"


def test_ensure_dir_tightens_mode(tmp_path):
    d = str(tmp_path / "d")
    os.mkdir(d, 0o755)
    assert sf.ensure_dir(d) is True
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert sf.ensure_dir(d) is False


@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), st.text(max_size=40), max_size=6))
def test_flat_yaml_roundtrip(values):
    assert sf.parse_flat_yaml(sf.dump_flat_yaml(values).decode("utf-8")) == dict(values)


@given(st.text(max_size=200))
def test_flat_yaml_parser_never_crashes(text):
    try:
        sf.parse_flat_yaml(text, "x.yaml")
    except sf.StateFileError as exc:
        assert "x.yaml" in str(exc)


def test_flat_yaml_accepts_talos_quoting():
    assert sf.parse_flat_yaml("---\naddress: \"\"\nsubnet: 'a''b'\n# c\nx: ~\n") == {"address": "", "subnet": "a'b", "x": ""}


def test_flat_yaml_duplicate_key():
    with pytest.raises(sf.StateFileError, match="duplicate"):
        sf.parse_flat_yaml("a: 1\na: 2\n", "f")


def test_read_json_corrupt(tmp_path):
    p = tmp_path / "s.json"
    p.write_text("{not json")
    with pytest.raises(sf.StateFileError, match="s.json"):
        sf.read_json(str(p))


def test_state_lock_excludes_another_process(tmp_path):
    import subprocess
    import sys

    state = str(tmp_path / "state")
    sf.ensure_dir(state)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(30)\n", os.path.join(state, sf.LOCK_FILE)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(sf.LockBusy, match="held by another kubespan reconcile"):
            with sf.state_lock(state, timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with sf.state_lock(state, timeout=5) as path:  # released when its holder died
        assert path.endswith(sf.LOCK_FILE)


def test_state_lock_creates_nothing_when_the_directory_is_missing(tmp_path):
    missing = str(tmp_path / "missing")
    with sf.state_lock(missing) as path:
        assert path is None
    assert not os.path.exists(missing)


def test_udp_port_in_use_detects_a_holder():
    import socket

    from ansible_collections.kubespan.mesh.plugins.module_utils.host.ports import udp_port_in_use

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    port = sock.getsockname()[1]
    try:
        assert udp_port_in_use(port) is True
    finally:
        sock.close()
    assert udp_port_in_use(port) is False
