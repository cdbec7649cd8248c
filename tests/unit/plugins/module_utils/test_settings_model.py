"""The settings model (plugins/module_utils/core/settings.py): each default written once, used everywhere.

The grep test scans plugins/, the role (defaults, meta, tasks, templates, vars, handlers) and playbooks/ for a second
assignment of a model-held default; its positive control re-adds a duplicate in a copy of the tree and must find it.
"""

import ast
import importlib.util
import os
import re
import shutil
from dataclasses import fields

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agentfiles import AgentOptions
from ansible_collections.kubespan.mesh.plugins.module_utils.core import settings as model
from ansible_collections.kubespan.mesh.plugins.module_utils.core.dataplane import DataPlaneConfig
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import settings_errors
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery.discovery_agent import DiscoverySettingsError, normalize_settings
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import ROLE_VARIABLES, ReconcileError, Settings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
# scripts/dev/settings-docs.py writes the one checked copy of each default: a line in the option's documentation
_SPEC = importlib.util.spec_from_file_location("settings_docs", os.path.join(ROOT, "scripts", "dev", "settings-docs.py"))
settings_docs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(settings_docs)
MODEL_FILE = os.path.relpath(os.path.realpath(model.__file__), os.path.realpath(ROOT))  # wherever it lives (layer folders)
SCANNED = ["plugins", "playbooks"] + [os.path.join("roles", "kubespan", d)
                                      for d in ("defaults", "meta", "tasks", "templates", "vars", "handlers")]
# Names a setting goes by besides its role variable and module options (the data plane's and the agent's fields)
ALIASES = {"kubespan_interface": ["link"], "kubespan_fwmark": ["wireguard_mark"], "kubespan_agent_metrics_file": ["metrics_file"],
           "kubespan_wireguard_implementation": ["implementation"], "kubespan_filters_peer_endpoints": ["peer_endpoint_filters"]}
# Defaults distinctive enough to be refused in any "default" or CONSTANT assignment, whatever the name
DISTINCTIVE = {model.MTU, model.LISTEN_PORT, model.RULE_PRIORITY, model.ROUTE_TABLE, model.STATE_DIR, model.LIB_DIR,
               model.COMMAND_PATH, model.API_SERVER_PORT, model.MACHINE_TYPE}


def _discovery(setting):
    return any(o.startswith("discovery.") for o in setting.options)


def literals(value):
    """The spellings of a default in Python and YAML source."""
    if isinstance(value, bool):
        return ["false", "False", "no"] if not value else ["true", "True", "yes"]
    if value is None:
        return ["~", "null"]  # YAML only: None is Python's "not given" everywhere
    if isinstance(value, int):
        return [str(value), hex(value)]
    if isinstance(value, str):
        return ['""', "''"] if value == "" else [re.escape(value), '"%s"' % re.escape(value), "'%s'" % re.escape(value)]
    return []


def patterns():
    """{raw literal: [(setting variable, compiled pattern, what it finds)]} for every model setting; a line is matched
    only against the patterns whose raw literal it contains (keeps the scan at a second)."""
    by_raw = {}
    end = r"(?![\w.:/-])"
    for setting in model.SETTINGS:
        label = setting.variable or setting.options[0]
        keys = {o.split(".")[-1] for o in setting.options} | set(ALIASES.get(setting.variable, []))
        names = set(keys)
        if setting.variable:
            names.add(setting.variable)  # (role variables are matched in YAML only: in Python they are message text)
        # the discovery keys (enabled, endpoint, insecure, ...) are too common as plain names: as such only the role
        # variable is matched; the keys in a dict literal, an option spec or a lookup with a fallback
        plain = {setting.variable} if _discovery(setting) else names
        for lit in literals(setting.default):
            raw = lit.replace("\\", "").strip("'\"") or lit[0]
            group = by_raw.setdefault(raw, [])
            for name in sorted(names):
                key = re.escape(name)
                if name in plain:
                    group.append((label, re.compile(r"(^|[\s,(])%s\s*(:\s*[\w\[\], .]+)?\s*[:=]\s*%s%s" % (key, lit, end)),
                                  "%s = %s" % (name, lit)))
                    group.append((label, re.compile(r"\b%s\s*\|\s*default\(\s*%s\s*[,)]" % (key, lit)),
                                  "%s | default(%s)" % (name, lit)))
                    group.append((label, re.compile(r"\bget\(\s*[\"']%s[\"']\s*\)\s*or\s*%s%s" % (key, lit, end)),
                                  "get(%s) or %s" % (name, lit)))
                group.append((label, re.compile(r"\b%s\s*=\s*dict\(.*\bdefault\s*=\s*%s%s" % (key, lit, end)),
                              "%s=dict(default=%s)" % (name, lit)))
            for name in sorted(keys) if _discovery(setting) else ():
                key = re.escape(name)
                group.append((label, re.compile(r"[\"']%s[\"']\s*:\s*%s%s" % (key, lit, end)), "'%s': %s" % (name, lit)))
                if lit in ('""', "''"):
                    continue  # x or "", get(x, ""): a string fallback, no default (peer records have endpoint keys too)
                group.append((label, re.compile(r"\[\s*[\"']%s[\"']\s*\]\s*or\s*%s%s" % (key, lit, end)),
                              "['%s'] or %s" % (name, lit)))
                group.append((label, re.compile(r"\bget\(\s*[\"']%s[\"']\s*,\s*%s%s" % (key, lit, end)),
                              "get('%s', %s)" % (name, lit)))
            if setting.default in DISTINCTIVE and not isinstance(setting.default, bool):
                group.append((label, re.compile(r"\bdefault\s*[:=]\s*%s%s" % (lit, end)), "default: %s" % lit))
                group.append((label, re.compile(r"^\s*[A-Z][A-Z0-9_]*\s*(:\s*\w+\s*)?=\s*%s%s" % (lit, end)), "CONSTANT = %s" % lit))
    # the allowed peer networks as a list literal
    by_raw.setdefault("100.64.0.0/10", []).append(
        ("kubespan_allowed_peer_networks", re.compile(r"100\.64\.0\.0/10[\"']?\s*,\s*[\"']?fc00::/7"), "the list of networks"))
    return by_raw


def files(root):
    for top in SCANNED:
        for dirpath, _dirs, names in os.walk(os.path.join(root, top)):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                if rel != MODEL_FILE and name.endswith((".py", ".yml", ".yaml", ".j2")) and "__pycache__" not in rel:
                    yield rel


def option_blocks(text):
    """(option path, its YAML dict) of a module's DOCUMENTATION or the role's argument spec, nested options included."""
    doc = yaml.safe_load(text) or {}
    options = doc.get("options") or {}
    if "argument_specs" in doc:
        options = {}
        for entry in doc["argument_specs"].values():
            options.update(entry.get("options") or {})

    def walk(opts, prefix):
        for name, spec in (opts or {}).items():
            yield prefix + name, spec or {}
            yield from walk((spec or {}).get("suboptions") or (spec or {}).get("options"), prefix + name + ".")
    return list(walk(options, ""))


def duplicates(root):
    """Every second place a model-held default is written: "file:line: setting (pattern)"."""
    found = []
    pats = patterns()
    for rel in files(root):
        text = open(os.path.join(root, rel), encoding="utf-8").read()
        skip = set()  # a module's EXAMPLES and RETURN show values, they assign no default
        if rel.endswith(".py"):
            for node in ast.parse(text).body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("EXAMPLES", "RETURN") for t in node.targets):
                    skip.update(range(node.lineno, node.end_lineno + 1))
        for number, line in enumerate(text.splitlines(), 1):
            if number in skip:
                continue
            code = line.split(" # ")[0] if rel.endswith(".py") else line.split(" #")[0]
            if code.lstrip().startswith("#") or settings_docs.LINE.match(line):
                continue  # (the generated documentation line: test_the_documented_defaults_are_the_models checks it)
            for lit, group in pats.items():
                if lit in code:
                    for variable, pattern, what in group:
                        if rel.endswith(".py") and what.startswith("kubespan_"):
                            continue
                        if pattern.search(code):
                            found.append("%s:%d: %s (%s)" % (rel, number, variable, what))
        # documentation defaults of model-held options (DOCUMENTATION of modules, the role's argument spec)
        docs = []
        if rel.endswith(".py"):
            for node in ast.parse(text).body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DOCUMENTATION" for t in node.targets):
                    docs.append(node.value.value)
        elif rel.endswith("argument_specs.yml"):
            docs.append(text)
        for doc in docs:
            for path, spec in option_blocks(doc):
                held = model.BY_VARIABLE.get(path) or (model.BY_OPTION.get(path) if "/modules/" in "/" + rel else None)
                if held is not None and "default" in spec and held.options and path != "address_source" \
                        and not path.endswith("identity.address_source"):
                    found.append("%s: option %s documents a default (%r)" % (rel, path, spec["default"]))
    return sorted(set(found))


def test_each_default_is_written_once():
    found = duplicates(ROOT)
    assert not found, "defaults written outside plugins/module_utils/core/settings.py:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """One copy of the scanned tree, clean (the duplicates are added and removed by each case)."""
    base = tmp_path_factory.mktemp("tree")
    for top in SCANNED:
        if os.path.isdir(os.path.join(ROOT, top)):
            shutil.copytree(os.path.join(ROOT, top), str(base / top), ignore=shutil.ignore_patterns("__pycache__"))
    assert duplicates(str(base)) == []
    return base


@pytest.mark.parametrize("rel,line,anchor", [
    ("roles/kubespan/defaults/main.yml", "kubespan_mtu: 1420\n", None),
    ("roles/kubespan/defaults/main.yml", "kubespan_relay: false   # no Talos key\n", None),
    ("roles/kubespan/tasks/mesh.yml", None, ('"{{ kubespan_listen_port | default(omit) }}"', '"{{ kubespan_listen_port | default(51820) }}"')),
    ("roles/kubespan/meta/argument_specs.yml", None, ("      kubespan_mtu:\n        type: int\n",
                                                      "      kubespan_mtu:\n        type: int\n        default: 1420\n")),
    ("plugins/modules/mesh.py", None, ('mtu=dict(type="int")', 'mtu=dict(type="int", default=1420)')),
    ("plugins/modules/mesh.py", None, ('lib_dir=dict(type="path")', 'lib_dir=dict(type="path", default="/usr/lib/kubespan")')),
    ("plugins/module_utils/core/dataplane.py", None, ("NFT_FAMILY = ", "DEFAULT_MTU = 1420\nNFT_FAMILY = ")),
    ("plugins/module_utils/reconcile/engine.py", None, ("    mtu: int = model.MTU", "    mtu: int = 1420")),
    ("plugins/module_utils/agent/agentfiles.py", None, ("    interval: int = AGENT_INTERVAL", "    interval: int = 30")),
    ("plugins/module_utils/core/peers.py", None,
     ("DEFAULT_ALLOWED_PEER_NETWORKS = ALLOWED_PEER_NETWORKS",
      'DEFAULT_ALLOWED_PEER_NETWORKS = ("10.0.0.0/8", "100.64.0.0/10", "fc00::/7")')),
    # the discovery settings (in the model since session 9; 298c13f wrote them in the role and the agent as well)
    ("roles/kubespan/defaults/main.yml", "kubespan_discovery_enabled: false\n", None),
    ("roles/kubespan/defaults/main.yml", "kubespan_machine_type: worker   # machine.type\n", None),
    ("roles/kubespan/tasks/mesh.yml", None, ("kubespan_harvest_extra_endpoints | default(omit)", "kubespan_harvest_extra_endpoints | default(false)")),
    ("roles/kubespan/meta/argument_specs.yml", None, ("      kubespan_api_server_port:\n        type: int\n",
                                                      "      kubespan_api_server_port:\n        type: int\n        default: 6443\n")),
    ("plugins/modules/mesh.py", None, ('api_server_port=dict(type="int")', 'api_server_port=dict(type="int", default=6443)')),
    ("plugins/module_utils/discovery/discovery_agent.py", None,
     ("HELLO_INTERVAL = ", "API_SERVER_PORT = 6443\nHELLO_INTERVAL = ")),
    ("plugins/module_utils/discovery/discovery_agent.py", None,
     ("    return dict(discovery_settings.normalize(None), ttl",
      '    base = {"enabled": False, "insecure": False}\n    return dict(discovery_settings.normalize(None), ttl')),
])
def test_a_re_added_duplicate_is_found(tree, rel, line, anchor):
    """Positive control of the grep test: a copy of the tree with one duplicate default re-added fails it."""
    path = tree / rel
    original = path.read_text()
    text = original + line if line is not None else original.replace(anchor[0], anchor[1], 1)
    assert text != original, anchor
    path.write_text(text)
    try:
        found = duplicates(str(tree))
    finally:
        path.write_text(original)
    assert found and all(f.startswith(rel) for f in found), found


def test_the_layers_take_their_defaults_from_the_model():
    s = Settings()
    for option, setting in model.BY_OPTION.items():
        if option in {f.name for f in fields(Settings)}:
            assert getattr(s, option) == setting.default, option
    d = DataPlaneConfig()
    assert (d.mtu, d.link, d.route_table, d.rule_priority, d.wireguard_mark, d.force_mark, d.mark_mask, d.nft_table) == (
        model.MTU, model.LINK_NAME, model.ROUTE_TABLE, model.RULE_PRIORITY, model.WIREGUARD_MARK, model.FORCE_MARK,
        model.MARK_MASK, model.NFT_TABLE)
    a = AgentOptions(bundle=b"PK")
    assert (a.lib_dir, a.state_dir, a.interface, a.interval, a.metrics_file, a.command_path) == (
        model.LIB_DIR, model.STATE_DIR, model.LINK_NAME, model.AGENT_INTERVAL, model.METRICS_FILE, model.COMMAND_PATH)
    assert set(ROLE_VARIABLES.values()) <= set(model.VARIABLES)
    defaults = model.effective({})
    assert defaults.pop("kubespan_agent_metrics_file") == ""  # "": <state_dir>/metrics.prom, filled by agentfiles.render_files
    assert settings_errors(defaults) == []


def test_the_documented_defaults_are_the_models():
    """ansible-doc shows each model-held option's default in one generated line (scripts/dev/settings-docs.py): every
    such option of the modules and the role's argument spec has it, equal to the model's."""
    stale = [rel for rel, (old, new) in settings_docs.generated().items() if old != new]
    assert not stale, "run: python scripts/dev/settings-docs.py --write (%s)" % ", ".join(stale)
    mesh = yaml.safe_load(settings_docs.generated()["plugins/modules/mesh.py"][0].split('DOCUMENTATION = r"""')[1].split('"""')[0])
    assert "Default V(1420), from the settings model (core/settings.py)." in mesh["options"]["mtu"]["description"]
    assert "Default V(6443), from the settings model (core/settings.py)." in \
        mesh["options"]["discovery"]["suboptions"]["api_server_port"]["description"]


@pytest.mark.parametrize("rel,anchor", [
    ("plugins/modules/mesh.py", ("Default V(1420), from", "Default V(1400), from")),
    ("plugins/modules/mesh.py", ("          - Default V(6443), from the settings model (core/settings.py).\n", "")),
    ("roles/kubespan/meta/argument_specs.yml", ("Default V(worker), from", "Default V(init), from")),
])
def test_a_stale_documented_default_is_found(tmp_path, monkeypatch, rel, anchor):
    """Positive control of the check above: a copy with one documented default changed or dropped is stale."""
    for path in [os.path.join("plugins", "modules"), os.path.join("roles", "kubespan", "meta")]:
        shutil.copytree(os.path.join(ROOT, path), str(tmp_path / path))
    target = tmp_path / rel
    text = target.read_text()
    assert anchor[0] in text
    target.write_text(text.replace(anchor[0], anchor[1], 1))
    monkeypatch.setattr(settings_docs, "ROOT", str(tmp_path))
    assert [r for r, (old, new) in settings_docs.generated().items() if old != new] == [rel]


def test_effective_takes_the_users_value_else_the_model():
    eff = model.effective({"kubespan_mtu": 1380, "kubespan_filters_peer_endpoints": None, "kubespan_group": "x"})
    assert eff["kubespan_mtu"] == 1380 and eff["kubespan_filters_peer_endpoints"] is None and "kubespan_group" not in eff
    assert eff["kubespan_listen_port"] == model.LISTEN_PORT and set(eff) == set(model.VARIABLES)
    eff["kubespan_allowed_peer_networks"].append("1.2.3.0/24")  # a copy: the model is unchanged
    assert model.default("kubespan_allowed_peer_networks") == list(model.ALLOWED_PEER_NETWORKS)


def test_fill_options_fills_only_unset_options_the_module_has():
    params = {"mtu": None, "listen_port": 51821, "state": "present", "agent": {"interval": None, "lib_dir": "/opt/ks", "bundle": "x"},
              "allowed_peer_networks": None}
    model.fill_options(params)
    assert params["mtu"] == model.MTU and params["listen_port"] == 51821 and "fwmark" not in params
    assert params["agent"] == {"interval": model.AGENT_INTERVAL, "lib_dir": "/opt/ks", "bundle": "x"}
    assert params["allowed_peer_networks"] == list(model.ALLOWED_PEER_NETWORKS)
    assert model.fill_options({"agent": None}) == {"agent": None}


def test_the_role_readme_shows_the_models_defaults():
    """The README's variable table is documentation of the model: each model-held row shows the model's default."""
    readme = open(os.path.join(ROOT, "roles", "kubespan", "README.md"), encoding="utf-8").read()
    rows = dict(re.findall(r"^\| `(kubespan_[a-z_]+)` \| ([^|]*) \|", readme, flags=re.M))
    for variable in model.VARIABLES:
        assert variable in rows, "%s has no row in roles/kubespan/README.md" % variable
        value = model.BY_VARIABLE[variable].default
        shown = rows[variable]
        if value in (None, "") or variable == "kubespan_agent_metrics_file":
            continue  # prose: "unset (dial all)", "(default zone)", "<state_dir>/metrics.prom"
        if isinstance(value, list):
            assert all(net in shown or net in readme for net in value), (variable, shown)
            continue
        spelled = "false" if value is False else "true" if value is True else str(value)
        assert "`%s`" % spelled in shown, (variable, shown, spelled)


# ---------------------------------------------------------------------------------- property: the model refuses first
_INTS = st.one_of(st.integers(min_value=-2, max_value=2 ** 33),
                  st.sampled_from([0, 1, 5, 32, 64, 96, 128, 180, 253, 254, 255, 1279, 1280, 1420, 32500, 32765, 32766,
                                   65535, 65536, 86400, 86401, 0xFFFFFFFE, 0xFFFFFFFF]))
_NAMES = st.one_of(st.sampled_from(["kubespan", "ks:0", "a/b", "x y", "", "wg0", "k" * 15, "k" * 16, "1abc", "ks.1-2_3"]),
                   st.text(max_size=17))
_PATHS = st.one_of(st.sampled_from(["/var/lib/kubespan", "/a b", "/a//b", "/a/", "a", "/x%i", "/"]), st.text(max_size=12))


_ENDPOINT_SAMPLES = ["https://discovery.talos.dev/", "10.0.0.5:3000", "http://10.0.0.5:3000", "grpc://h:1", "[2001:db8::5]:3000",
                     "ftp://x/", "nohostport", "", "host:0", "host:65536", "https://", "http://[::1", " 10.0.0.6:3000 "]
_ENDPOINTS = st.one_of(st.sampled_from(_ENDPOINT_SAMPLES), st.text(max_size=10))
_DISCOVERY = {"kubespan_discovery_endpoint": _ENDPOINTS, "kubespan_discovery_endpoints": st.lists(_ENDPOINTS, max_size=10),
              "kubespan_discovery_ca_file": st.sampled_from(["", "/etc/ca.pem"]),
              "kubespan_discovery_server_name": st.sampled_from(["", "disc.example"])}


def _user_values():
    """Any subset of the model-held settings the data plane or the agent read, with good and bad values."""
    optional = {}
    for setting in model.SETTINGS:
        if not setting.variable or not setting.options:
            continue
        if setting.variable in _DISCOVERY:
            optional[setting.variable] = _DISCOVERY[setting.variable]
        elif setting.kind == "bool" and setting.options[0].startswith("discovery."):
            optional[setting.variable] = st.booleans()  # (the module's type: bool converts; the early check too)
        elif setting.kind == "int":
            optional[setting.variable] = _INTS
        elif setting.choices:
            optional[setting.variable] = st.one_of(st.sampled_from(setting.choices), st.text(max_size=8))
        elif setting.kind == "path":
            optional[setting.variable] = _PATHS
        elif setting.variable in ("kubespan_interface", "kubespan_nft_table"):
            optional[setting.variable] = _NAMES
    return st.fixed_dictionaries({}, optional=optional)


@hyp_settings(max_examples=500, deadline=None)
@given(_user_values())
def test_whatever_the_module_or_the_agent_refuses_the_model_refuses(user):
    """Property over the model: the user's values, the rest filled by the model as the module does (fill_options),
    are refused by engine.Settings (validate and the data plane), agentfiles.AgentOptions or the node agent's discovery
    settings (discovery_agent.normalize_settings) only if the role's early check (settings_errors on the user's values
    alone) refused them first."""
    params = {option: None for option in model.BY_OPTION if "." not in option}
    params["agent"] = {"lib_dir": None, "interval": None, "metrics_file": None, "command_path": None}
    params["discovery"] = {option.partition(".")[2]: None for option in model.BY_OPTION if option.startswith("discovery.")}
    for variable, value in user.items():
        option = model.BY_VARIABLE[variable].options[0]
        holder, _dot, key = option.rpartition(".")
        (params[holder] if holder else params)[key] = value
    model.fill_options(params)
    refused = []
    fields_ = {f.name for f in fields(Settings)}
    try:
        settings = Settings(**{k: v for k, v in params.items() if k in fields_})
        settings.validate()
        settings.dataplane()
    except (ReconcileError, ValueError, TypeError) as exc:
        refused.append(str(exc))
    try:
        AgentOptions(bundle=b"PK", state_dir=params["state_dir"], interface=params["interface"],
                     metrics_file=params["agent"]["metrics_file"] or str(params["state_dir"]).rstrip("/") + "/metrics.prom",
                     **{k: params["agent"][k] for k in ("lib_dir", "interval", "command_path")}).validate()
    except (ValueError, TypeError) as exc:
        refused.append(str(exc))
    try:
        normalize_settings(params["discovery"])
    except DiscoverySettingsError as exc:
        refused.append(str(exc))
    if refused:
        assert settings_errors(user), (user, refused)
