"""Controller-side integration tests: real ansible-playbook runs that touch no node.

The role validates its input before it changes anything, so bad input is tested against hosts with a
local connection: the play must fail with a message naming the bad value and the fix, before any task
that would change the machine. The gen_secrets playbook runs for real into a temporary directory.
"""

import base64
import json
import os
import stat
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
CID = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
OTHER_SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def collections_path(tmp_path):
    base = tmp_path / "collections"
    link = base / "ansible_collections" / "kubespan" / "mesh"
    if not link.exists():
        link.parent.mkdir(parents=True)
        link.symlink_to(ROOT)
    return str(base)


def playbook(tmp_path, *args, inventory=None, env_changes=None):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(tmp_path), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), PWD=str(tmp_path))
    for name, value in (env_changes or {}).items():  # None removes the variable
        env.pop(name, None) if value is None else env.__setitem__(name, value)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook")]
    if inventory is not None:
        inv = tmp_path / "inventory.yml"
        inv.write_text(inventory)
        cmd += ["-i", str(inv)]
    proc = subprocess.run(cmd + list(args), cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout


def inventory(host_vars, group_vars=""):
    hosts = "".join("    %s:\n%s" % (name, "".join("      %s\n" % v for v in hv)) for name, hv in host_vars.items())
    return ("kubespan:\n  hosts:\n%s  vars:\n    ansible_connection: local\n    ansible_python_interpreter: %s\n%s"
            % (hosts, sys.executable, group_vars))


SITE = os.path.join(ROOT, "playbooks", "site.yml")


def test_missing_secrets_fail_with_the_generation_command(tmp_path):
    rc, out = playbook(tmp_path, SITE, inventory=inventory({"a": [], "b": []}))
    assert rc != 0
    assert "kubespan_cluster_id and kubespan_cluster_secret" in out and "kubespan.mesh.gen_secrets" in out
    assert "Ensure the node identity" not in out  # failed before touching the host


@pytest.mark.parametrize("secret,problem", [
    (base64.b64encode(bytes(range(1, 32))).decode(), "kubespan_cluster_secret decodes to 31 bytes, 32 needed"),
    ("not base64 at all, but long enough to be found", "kubespan_cluster_secret is not valid base64"),
])
def test_a_bad_secret_is_named_with_how_to_regenerate(tmp_path, secret, problem):
    """Issue 15 item 7: a 31-byte secret got "must be set"; now the problem and the regeneration command."""
    inv = inventory({"a": []}, "    kubespan_cluster_id: %s\n    kubespan_cluster_secret: '%s'\n" % (CID, secret))
    rc, out = playbook(tmp_path, SITE, inventory=inv)
    assert rc != 0
    assert problem in out and "-e kubespan_secrets_force=true" in out, out[-3000:]
    assert secret not in out and secret[4:12] not in out
    assert "Ensure the node identity" not in out


def test_disagreeing_hosts_are_named_and_secret_not_printed(tmp_path):
    inv = inventory({"a": [], "b": ["kubespan_cluster_secret: %s" % OTHER_SECRET]},
                    "    kubespan_cluster_id: %s\n    kubespan_cluster_secret: %s\n" % (CID, SECRET))
    rc, out = playbook(tmp_path, SITE, inventory=inv)
    assert rc != 0
    assert "do not share one cluster ID and secret" in out and "['b']" in out
    assert SECRET not in out and OTHER_SECRET not in out
    assert "Ensure the node identity" not in out


def test_mtu_below_1280_is_refused(tmp_path):
    inv = inventory({"a": ["kubespan_mtu: 1200"]},
                    "    kubespan_cluster_id: %s\n    kubespan_cluster_secret: %s\n" % (CID, SECRET))
    rc, out = playbook(tmp_path, SITE, inventory=inv)
    assert rc != 0 and "kubespan_mtu=1200" in out and "1280" in out
    assert SECRET not in out


def test_bad_networks_and_endpoints_are_all_named_before_any_change(tmp_path):
    inv = inventory({"a": ["kubespan_kubernetes_networks: ['10.244.1.0/24', '10.244.300.0/24']",
                           "kubespan_filters_endpoints: ['!bogus']", "kubespan_extra_announced_endpoints: ['203.0.113.7']"]},
                    "    kubespan_cluster_id: %s\n    kubespan_cluster_secret: %s\n" % (CID, SECRET))
    rc, out = playbook(tmp_path, SITE, inventory=inv)
    assert rc != 0
    assert "kubespan_kubernetes_networks" in out and "10.244.300.0/24" in out
    assert "kubespan_filters_endpoints" in out and "!bogus" in out
    assert "kubespan_extra_announced_endpoints" in out and "203.0.113.7" in out
    assert "Install the node packages" not in out and "Ensure the node identity" not in out


def test_bad_choice_is_refused_by_the_argument_spec(tmp_path):
    inv = inventory({"a": ["kubespan_wireguard_implementation: magic", "kubespan_firewall_backend: iptables"]},
                    "    kubespan_cluster_id: %s\n    kubespan_cluster_secret: %s\n" % (CID, SECRET))
    rc, out = playbook(tmp_path, SITE, inventory=inv)
    assert rc != 0 and "kubespan_wireguard_implementation" in out and "magic" in out
    assert "kubespan_firewall_backend" in out and "iptables" in out


def test_gen_secrets_writes_once_with_0600(tmp_path):
    target = tmp_path / "group_vars" / "kubespan" / "secrets.yml"
    rc, out = playbook(tmp_path, "kubespan.mesh.gen_secrets", "-e", "kubespan_secrets_file=%s" % target)
    assert rc == 0, out
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == 0o600
    first = target.read_text()
    assert "kubespan_cluster_id:" in first and "kubespan_cluster_secret:" in first and "ansible-vault encrypt" in out
    secret = [line.split(": ", 1)[1] for line in first.splitlines() if line.startswith("kubespan_cluster_secret")][0]
    assert secret not in out  # the secret is written to the file only
    rc, out = playbook(tmp_path, "kubespan.mesh.gen_secrets", "-e", "kubespan_secrets_file=%s" % target)
    assert rc == 0 and "changed=0" in out and target.read_text() == first  # never overwritten


def test_gen_secrets_relative_path_is_relative_to_the_working_directory(tmp_path):
    rc, out = playbook(tmp_path, "kubespan.mesh.gen_secrets", "-e", "kubespan_secrets_file=group_vars/kubespan/secrets.yml")
    assert rc == 0, out
    assert (tmp_path / "group_vars" / "kubespan" / "secrets.yml").is_file()
    assert not os.path.exists(os.path.join(ROOT, "playbooks", "group_vars"))


def test_gen_secrets_refuses_a_corrupt_file(tmp_path):
    target = tmp_path / "secrets.yml"
    target.write_text("kubespan_cluster_id: x\nkubespan_cluster_secret: short\n")
    rc, out = playbook(tmp_path, "kubespan.mesh.gen_secrets", "-e", "kubespan_secrets_file=%s" % target)
    assert rc != 0 and "kubespan_cluster_secret is not valid base64" in out


@pytest.mark.parametrize("path", ["playbooks/site.yml", "playbooks/gen_secrets.yml"])
def test_playbooks_pass_syntax_check(tmp_path, path):
    rc, out = playbook(tmp_path, "--syntax-check", os.path.join(ROOT, path), inventory=inventory({"a": []}))
    assert rc == 0, out


def test_the_cache_directory_follows_KUBESPAN_CACHE_DIR_else_home(tmp_path):
    """tests/conftest.py sets KUBESPAN_CACHE_DIR so no test writes the real ~/.cache; the role's default must honour it."""
    play = tmp_path / "show.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  vars_files: [%s]\n  tasks:\n"
                    "    - ansible.builtin.debug:\n        msg: 'cache dir <{{ kubespan_controller_cache_dir }}>'\n"
                    % os.path.join(ROOT, "roles", "kubespan", "defaults", "main.yml"))
    rc, out = playbook(tmp_path, str(play), env_changes={"KUBESPAN_CACHE_DIR": str(tmp_path / "mine")})
    assert rc == 0 and "cache dir <%s>" % (tmp_path / "mine") in out, out
    rc, out = playbook(tmp_path, str(play), env_changes={"KUBESPAN_CACHE_DIR": None, "HOME": str(tmp_path / "home")})
    assert rc == 0 and "cache dir <%s/.cache/kubespan-mesh>" % (tmp_path / "home") in out, out
    assert os.environ.get("KUBESPAN_CACHE_DIR", "").startswith(tempfile.gettempdir())  # set by tests/conftest.py


def _affiliate(name, n, **extra):
    entry = {"name": name, "node_id": "Node%d" % n, "public_key": base64.b64encode(bytes([n]) * 32).decode(),
             "address": "fd7a:115c:a1e0:ab12::%x" % n, "endpoints": ["10.0.0.%d:51820" % n]}
    entry.update(extra)
    return entry


def test_bad_affiliates_never_enter_the_cache_and_a_bad_cached_one_is_named(tmp_path):
    """Issue 15 item 7: a bad kubespan_affiliate (a host left out by --limit) was cached silently, and every later
    full run failed on all hosts without naming the cache. Through ansible-playbook: the role's read (the
    cached_affiliates filter) and write (the affiliates_cache action) of the cache."""
    cache = tmp_path / "cache" / "affiliates-x.json"
    cache.parent.mkdir()
    good_a, good_b = _affiliate("node1", 1), _affiliate("node2", 2)
    cache.write_text(json.dumps([good_a, _affiliate("old-bad", 3, public_key="bm90IGEga2V5")]))  # an old writer's entry
    fresh = [good_b, _affiliate("limited-out", 4, public_key=base64.b64encode(b"\x04" * 31).decode())]
    (tmp_path / "vars.json").write_text(json.dumps({"cache": str(cache), "fresh": fresh}))
    play = tmp_path / "cache.yml"
    play.write_text("""- hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the cache
      ansible.builtin.set_fact:
        cached: "{{ cache | kubespan.mesh.cached_affiliates }}"
    - name: Show it
      ansible.builtin.debug:
        msg: "cached <{{ cached | map(attribute='name') | join(',') }}>"
    - name: Write it
      kubespan.mesh.affiliates_cache:
        path: "{{ cache }}"
        affiliates: "{{ fresh + cached }}"
""")
    rc, out = playbook(tmp_path, str(play), "-e", "@%s" % (tmp_path / "vars.json"))
    assert rc == 0, out
    flat = " ".join(out.split())
    assert "cached <node1>" in out
    assert "%s: entry of host old-bad ignored" % cache in flat, out
    assert "%s: entry of host limited-out ignored" % cache in flat and "public_key" in flat, out
    assert json.loads(cache.read_text()) == [good_a, good_b]


def _kubespan_host_state():
    """What the role would change first on this (local) host: policy rules, table 180, the link, the nft table."""
    out = []
    for cmd in (["ip", "rule"], ["ip", "-6", "rule"], ["ip", "route", "show", "table", "180"],
                ["ip", "-6", "route", "show", "table", "180"], ["ip", "-d", "link", "show", "kubespan"],
                ["nft", "list", "tables"]):
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, timeout=30)
            out.append("%s -> %d\n%s" % (" ".join(cmd), proc.returncode, proc.stdout))
        except FileNotFoundError:
            out.append("%s -> not installed" % " ".join(cmd))
    return out


def test_values_the_data_plane_refuses_stop_every_host_before_any_change(tmp_path):
    """Issue 14 item 2: these passed the early check and were refused by the mesh module only after the WireGuard
    device, address and peers were applied. Now each host stops in the role's first tasks, its variable named with
    the fix, and this host's rules, routes, link and nft tables are as before."""
    bad = {
        "prio": ("kubespan_rule_priority: 40000", ["kubespan_rule_priority=40000", "32766"]),
        "table": ("kubespan_route_table: 254", ["kubespan_route_table=254", "reserved", "Talos: 180"]),
        "mark": ("kubespan_fwmark: 0x100", ["kubespan_fwmark=256", "outside the mark mask"]),
        "force": ("kubespan_force_mark: 0x20", ["kubespan_force_mark=32", "must differ"]),
        "name": ("kubespan_interface: 'ks:0'", ["kubespan_interface='ks:0'", "letters, digits"]),
        "mtu": ("kubespan_mtu: 70000", ["kubespan_mtu=70000", "1280-65535"]),
        "cidr": ("kubespan_kubernetes_networks: ['10.244.0.0/33']", ["kubespan_kubernetes_networks", "10.244.0.0/33"]),
        "filter": ("kubespan_filters_endpoints: ['!bogus']", ["kubespan_filters_endpoints", "!bogus"]),
        "endpoint": ("kubespan_extra_announced_endpoints: ['203.0.113.7:0']", ["kubespan_extra_announced_endpoints",
                                                                               "203.0.113.7:0"]),
        "port": ("kubespan_listen_port: 65536", ["kubespan_listen_port=65536", "1-65535"]),
        "path": ("kubespan_state_dir: /var/lib/kube span", ["kubespan_state_dir", "systemd units"]),
        # the settings model's defaults fill what is not set: the mask alone leaves the default fwmark 0x20 outside it
        "mask": ("kubespan_mark_mask: 0x40", ["kubespan_fwmark=(default)", "kubespan_mark_mask=64", "outside the mark mask"]),
        "nft": ("kubespan_nft_table: 1bad", ["kubespan_nft_table=1bad", "not a valid name"]),
        # the discovery settings (the settings model's since session 9): what the node agent would refuse
        "disc": ("kubespan_discovery_enabled: true", ["kubespan_discovery_endpoint is required", "https://discovery.talos.dev/"]),
        "discurl": (["kubespan_discovery_enabled: true", "kubespan_discovery_endpoint: ftp://disc.example/"],
                    ["kubespan_discovery_endpoint", "ftp://disc.example/", "https://host[:port]/"]),
        "discca": (["kubespan_discovery_enabled: true", "kubespan_discovery_endpoint: http://10.0.0.5:3000/",
                    "kubespan_discovery_ca_file: /etc/disc-ca.pem"], ["kubespan_discovery_ca_file is set", "plaintext"]),
        "apiport": ("kubespan_api_server_port: 0", ["kubespan_api_server_port=0", "1-65535"]),
        # the role's own CA variable (installed before the mesh module runs): refused with a plaintext endpoint too
        "discpem": (["kubespan_discovery_enabled: true", "kubespan_discovery_endpoint: http://10.0.0.5:3000/",
                     "kubespan_discovery_ca_cert: '-----BEGIN CERTIFICATE-----'"], ["kubespan_discovery_ca_cert", "plaintext"]),
    }
    before = _kubespan_host_state()
    inv = inventory({name: [line] if isinstance(line, str) else line for name, (line, _needles) in bad.items()},
                    "    kubespan_cluster_id: %s\n    kubespan_cluster_secret: %s\n" % (CID, SECRET))
    rc, out = playbook(tmp_path, SITE, inventory=inv)
    assert rc != 0
    for name, (_line, needles) in bad.items():
        failed = [line for line in out.splitlines() if ("[%s]" % name) in line and "FAILED" in line]
        assert failed, (name, out[-4000:])
        message = out[out.index(failed[0]):]
        message = message[:message.index("\n", message.index("msg"))] if "msg" in message else message[:2000]
        for needle in needles:
            assert needle in message, (name, needle, message)
    assert "Install the node packages" not in out and "Ensure the node identity" not in out
    assert SECRET not in out
    assert _kubespan_host_state() == before
