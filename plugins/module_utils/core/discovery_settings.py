# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The discovery settings' rules (Talos's cluster.discovery with the service registry). Pure, standard library only.

The defaults, types, ranges and choices are the settings model's (core/settings.py, the ``discovery.*`` options);
here are the rules across them and the forms of a service endpoint. One function, :func:`normalize`, applies them:
the node agent (discovery_agent.normalize_settings, on the desired state), the mesh module (on its ``discovery``
option) and the role's early check (settingscheck.settings_errors, on the kubespan_discovery_* variables) all call
it, so a value the agent would refuse stops the role before the first host task. Messages name the role variable.
"""

from __future__ import annotations

from typing import Optional, Tuple
from urllib.parse import urlsplit

from ..base.errors import KubeSpanError
from . import settings as model


class DiscoverySettingsError(KubeSpanError, ValueError):
    """Discovery settings are invalid; the message names the setting."""


KEYS = tuple(model.discovery_defaults())  # the ``discovery`` option's keys
MAX_SERVICES = model.MAX_DISCOVERY_SERVICES
MACHINE_TYPES = model.MACHINE_TYPES
ENDPOINT_FORMS = "https://host[:port]/, http://host:port/ or host:port"


def parse_service_endpoint(endpoint: str, insecure: bool) -> Tuple[str, bool]:
    """Talos-style service endpoint -> (grpc target, use TLS); ValueError when unusable.

    ``https://discovery.example.com/`` -> ("discovery.example.com:443", True); ``http://10.0.0.1:3000`` ->
    plaintext; a bare ``host:port`` uses TLS unless ``insecure``.
    """
    text = str(endpoint).strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
            raise ValueError("discovery endpoint %r: expected https://host[:port]/ or http://host[:port]/" % endpoint)
        tls = parts.scheme in ("https", "grpcs") and not insecure
        port = parts.port or (443 if parts.scheme in ("https", "grpcs") else 80)
        host = "[%s]" % parts.hostname if ":" in parts.hostname else parts.hostname
        return "%s:%d" % (host, port), tls
    if not text:
        raise ValueError("discovery endpoint is empty")
    return text, not insecure


def service_target(endpoint: str, insecure: bool, variable: str = "kubespan_discovery_endpoint") -> Tuple[str, bool]:
    """(host:port, TLS) of a Talos-style service endpoint, as the discovery client reads it; DiscoverySettingsError
    naming ``variable`` (the role variable the endpoint came from) if unusable."""
    text = str(endpoint).strip()
    if "://" not in text:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise DiscoverySettingsError("%s %r: expected %s (Talos's public service: %s)"
                                         % (variable, endpoint, ENDPOINT_FORMS, model.TALOS_DISCOVERY_ENDPOINT))
    try:
        return parse_service_endpoint(text, insecure)
    except ValueError as exc:
        raise DiscoverySettingsError("%s: %s" % (variable, exc))


def normalize(raw: Optional[dict]) -> dict:
    """The ``discovery`` keys (KEYS) as the node agent keeps them, the model's defaults for what is unset (None);
    DiscoverySettingsError naming the role variable and the fix on a bad value. Other keys of ``raw`` are ignored.

    ``endpoints`` (kubespan_discovery_endpoints, Talos >= 1.14: one client per endpoint, results merged) wins over the
    single ``endpoint`` (kubespan_discovery_endpoint); afterwards ``endpoints`` lists every service in order and
    ``endpoint`` is the first of them (or "")."""
    out = model.discovery_defaults()
    for key, value in (raw or {}).items():
        if key in out and value is not None:
            out[key] = value
    out["enabled"] = bool(out["enabled"])
    out["insecure"] = bool(out["insecure"])
    out["harvest_extra_endpoints"] = bool(out["harvest_extra_endpoints"])
    listed = out["endpoints"]
    if isinstance(listed, str) or not isinstance(listed, (list, tuple)):
        raise DiscoverySettingsError("kubespan_discovery_endpoints must be a list of endpoints (one item per line), got %s"
                                     % type(listed).__name__)
    endpoints = []
    for item in [str(e or "").strip() for e in listed] or [str(out["endpoint"] or "").strip()]:
        if item and item not in endpoints:
            endpoints.append(item)
    if len(endpoints) > MAX_SERVICES:
        raise DiscoverySettingsError("kubespan_discovery_endpoints lists %d services: at most %d" % (len(endpoints), MAX_SERVICES))
    out["endpoints"] = endpoints
    out["endpoint"] = endpoints[0] if endpoints else ""
    out["ca_file"] = str(out["ca_file"] or "")
    out["server_name"] = str(out["server_name"] or "")
    out["machine_type"] = str(out["machine_type"] or model.MACHINE_TYPE)
    if out["machine_type"] not in MACHINE_TYPES:
        raise DiscoverySettingsError("kubespan_machine_type %r: use one of %s (Talos's machine.type)" % (out["machine_type"], ", ".join(MACHINE_TYPES)))
    port = out["api_server_port"]
    try:
        if isinstance(port, bool):
            raise ValueError(port)
        out["api_server_port"] = int(port)
    except (TypeError, ValueError):
        raise DiscoverySettingsError("kubespan_api_server_port %r: must be an integer, 1-65535 (Talos: %d)" % (port, model.API_SERVER_PORT))
    if not 1 <= out["api_server_port"] <= 65535:
        raise DiscoverySettingsError("kubespan_api_server_port %s must be 1-65535 (Talos: %d)" % (out["api_server_port"], model.API_SERVER_PORT))
    if out["enabled"]:
        if not endpoints:
            raise DiscoverySettingsError("kubespan_discovery_endpoint is required (or kubespan_discovery_endpoints) when "
                                         "kubespan_discovery_enabled is true (e.g. https://discovery.example.com:443, "
                                         "10.0.0.5:3000 with kubespan_discovery_insecure, or Talos's public service %s)"
                                         % model.TALOS_DISCOVERY_ENDPOINT)
        source = "kubespan_discovery_endpoints item" if any(str(e or "").strip() for e in listed) else "kubespan_discovery_endpoint"
        for endpoint in endpoints:
            target, tls = service_target(endpoint, out["insecure"], source)
            if not tls and out["ca_file"]:
                raise DiscoverySettingsError("kubespan_discovery_ca_file is set but the connection to %s is plaintext "
                                             "(kubespan_discovery_insecure or an http:// endpoint): unset one of them"
                                             % target)
    return out
