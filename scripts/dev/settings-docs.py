# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Write the settings model's defaults into the documentation ansible-doc shows, as one checked line per option.

The settings model (plugins/module_utils/core/settings.py) is the one place a default is written. The modules and the
role declare model-held options without ``default:`` (a role default would make every setting look set, and
validate-modules wants a documented ``default:`` to equal the argument spec's). So that ``ansible-doc`` still shows
each default, every model-held option of a module's DOCUMENTATION (plugins/modules/*.py, ``discovery.*`` and
``agent.*`` suboptions included) and of the role's meta/argument_specs.yml gets one generated description line::

    - Default V(1420), from the settings model (plugins/module_utils/core/settings.py).

This script writes those lines (``--write``) or lists the ones that differ from the model (``--check``, exit 1);
tests/unit/plugins/module_utils/test_settings_model.py runs the check, and its grep for duplicated defaults accepts
exactly these lines. Run it after changing a default or adding a setting:

    python scripts/dev/settings-docs.py --write
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_PATH = os.path.join(ROOT, "plugins", "module_utils", "core", "settings.py")
ARGUMENT_SPECS = os.path.join("roles", "kubespan", "meta", "argument_specs.yml")
SOURCE = "from the settings model (core/settings.py)."
# a generated line, and the older pointer it replaces
LINE = re.compile(r"^\s*- Default .*, from the settings model \(core/settings\.py\)\.$")
OLD_LINE = re.compile(r"^\s*- Default from the settings model \(plugins/module_utils/core/settings\.py\); the role's README shows it\.$")
KEY = re.compile(r"^(\s*)([A-Za-z_][\w-]*):(\s.*)?$")


def load_model():
    """core/settings.py is standard library only: loaded by path, no collection on sys.path needed."""
    spec = importlib.util.spec_from_file_location("kubespan_settings_model", MODEL_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shown(setting, model) -> str:
    """The default as ansible-doc markup."""
    value = setting.default
    if value is None:
        return "unset (V(null))"
    if isinstance(value, bool):
        return "V(%s)" % ("true" if value else "false")
    if isinstance(value, int):
        return "V(0x%x)" % value if setting.hint == model.MARK_HINT else "V(%d)" % value
    if isinstance(value, (list, tuple)):
        return ", ".join("V(%s)" % item for item in value) if value else "V([])"
    return 'V("")' if value == "" else "V(%s)" % value


def default_line(setting, model) -> str:
    return "Default %s, %s" % (shown(setting, model), SOURCE)


def rewrite(lines, held):
    """``lines`` of one YAML document whose option blocks sit under ``options:``/``suboptions:``; ``held(path)`` -> the
    model's Setting of an option path or None. Returns the lines with each held option's generated line in place."""
    out = []
    stack = []  # (indent, key, option path or None)
    i = 0
    while i < len(lines):
        line = lines[i]
        match = KEY.match(line)
        if not match or not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
            i += 1
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1] if stack else None
        key = match.group(2)
        path = None
        if parent and parent[1] in ("options", "suboptions"):
            owner = next((entry[2] for entry in reversed(stack) if entry[2]), None)
            path = "%s.%s" % (owner, key) if owner else key
        stack.append((indent, key, path))
        if key != "description" or not parent or not parent[2]:
            out.append(line)
            i += 1
            continue
        setting = held(parent[2])
        # the description's lines: this key line and every following line indented deeper
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():
            end -= 1  # blank lines after the description stay where they are
        block = lines[i:end]
        if setting is None or _has_default(lines, end, indent):
            out.extend(block)
            i = end
            continue
        value = (match.group(3) or "").strip()
        if value and not value.startswith((">", "|")):  # one scalar: make it a list item
            items = [" " * (indent + 2) + "- " + value] + ["  " + extra for extra in block[1:]]
        elif value:  # a block scalar (> or |): kept as the first item
            items = [" " * (indent + 2) + "- " + value] + ["  " + extra for extra in block[1:]]
        else:
            items = block[1:]
        items = [item for item in items if not LINE.match(item) and not OLD_LINE.match(item)]
        while items and not items[-1].strip():
            items.pop()
        out.append(" " * indent + "description:")
        out.extend(items)
        out.append(" " * (indent + 2) + "- " + default_line(setting, MODEL))
        i = end
    return out


def _has_default(lines, start, indent):
    """True when the option holding the description at ``indent`` has a ``default:`` key (the grep test's
    exemption: address_source, documented where it is not model-held)."""
    j = start
    while j < len(lines):
        text = lines[j]
        if text.strip():
            depth = len(text) - len(text.lstrip())
            if depth < indent:
                return False
            if depth == indent and text.lstrip().startswith("default:"):
                return True
        j += 1
    return False


def documents():
    """(path relative to ROOT, its text, (start, end) of the YAML to rewrite, held(path))."""
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py"))):
        text = open(path, encoding="utf-8").read()
        match = re.search(r'^DOCUMENTATION = r"""\n(.*?)^"""', text, flags=re.S | re.M)
        if match:
            yield os.path.relpath(path, ROOT), text, match.span(1), MODEL.BY_OPTION.get
    path = os.path.join(ROOT, ARGUMENT_SPECS)
    text = open(path, encoding="utf-8").read()
    yield ARGUMENT_SPECS, text, (0, len(text)), MODEL.BY_VARIABLE.get


def generated():
    """{relative path: (current text, generated text)}."""
    result = {}
    for rel, text, (start, end), held in documents():
        part = text[start:end]
        new = "\n".join(rewrite(part.split("\n"), held))
        result[rel] = (text, text[:start] + new + text[end:])
    return result


MODEL = load_model()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files (else: check only)")
    args = parser.parse_args(argv)
    texts = generated()
    stale = [rel for rel, (old, new) in texts.items() if old != new]
    if args.write:
        for rel in stale:
            with open(os.path.join(ROOT, rel), "w", encoding="utf-8") as handle:
                handle.write(texts[rel][1])
        print("rewrote %s" % (", ".join(stale) or "nothing"))
        return 0
    for rel in stale:
        print("%s: a model default's line is missing or stale: run python scripts/dev/settings-docs.py --write" % rel)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
