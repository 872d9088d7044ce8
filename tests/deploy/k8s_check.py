"""Render shoal's Helm chart without Helm, and check objects against Kubernetes' schemas.

No cluster and no ``helm`` binary run here (helm is neither on PyPI nor in Debian), so:

* :func:`render_chart` renders ``templates/*.yaml`` with the small subset of Helm's
  template language the chart keeps to, with Helm's meaning:
  ``{{ .Values.a.b }}``, ``{{ .Release.Name }}``, ``{{ .Release.Namespace }}``,
  ``{{ .Chart.Version }}`` (any ``Chart.yaml`` field, capitalized as Helm does);
  ``{{ if X }} … {{ else }} … {{ end }}`` and ``if not X`` (empty strings, maps, lists,
  0, false and missing values are false, as in Go templates); the pipeline functions
  ``quote``, ``b64enc``, ``toYaml``, ``nindent N``, ``default X`` and
  ``required "message" X``; and ``{{-``/``-}}`` whitespace trimming. Anything else is an
  error, so the chart can't drift outside what this checks. Unlike Helm, a value the
  chart names but ``values.yaml`` lacks is an error too (Helm prints ``<no value>``).
* :func:`check_object` validates an object against the Kubernetes Python client's
  models: every field must be known to its model (a typo is an error, where the
  client's own deserializer would drop it), of the model's type, and required fields
  present.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

__all__ = ["MODELS", "ChartError", "check_object", "load_manifests", "render_chart"]

#: The kinds shoal's manifests use, by (apiVersion, kind).
MODELS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "Secret"): "V1Secret",
}


class ChartError(Exception):
    """A template outside the supported subset, or a ``required`` value missing."""


# ---------------------------------------------------------------------- rendering

_ACTION = re.compile(r"\{\{(-)?\s*(.*?)\s*(-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s|]+|\|')


def _tokens(action: str) -> list[str]:
    return _TOKEN.findall(action)


def _lookup(path: str, scope: Mapping[str, Any]) -> Any:
    if not path.startswith("."):
        raise ChartError(f"unsupported value {path!r}")
    node: Any = scope
    for part in path[1:].split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ChartError(f"{path} is not set (no {part!r})")
        node = node[part]
    return node


def _truthy(value: Any) -> bool:
    return bool(value)  # Go templates: empty, zero, false and nil are false


def _literal_or_lookup(token: str, scope: Mapping[str, Any]) -> Any:
    if token.startswith('"'):
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    return _lookup(token, scope)


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list)):
        raise ChartError(f"a map or list printed without toYaml: {value!r}")
    return str(value)


def _evaluate(action: str, scope: Mapping[str, Any]) -> Any:
    commands: list[list[str]] = [[]]
    for tok in _tokens(action):
        if tok == "|":
            commands.append([])
        else:
            commands[-1].append(tok)
    value: Any = None
    for i, cmd in enumerate(commands):
        if not cmd:
            raise ChartError(f"empty command in {{{{ {action} }}}}")
        name, args = cmd[0], cmd[1:]
        piped = [] if i == 0 else [value]
        if name.startswith(".") and not args and i == 0:
            value = _lookup(name, scope)
        elif name == "not" and len(args) + len(piped) == 1:
            value = not _truthy(piped[0] if piped else _literal_or_lookup(args[0], scope))
        elif name == "required" and len(args) + len(piped) == 2:
            message = _literal_or_lookup(args[0], scope)
            value = piped[0] if piped else _literal_or_lookup(args[1], scope)
            if not _truthy(value):
                raise ChartError(message)
        elif name == "default" and len(args) + len(piped) == 2:
            fallback = _literal_or_lookup(args[0], scope)
            given = piped[0] if piped else _literal_or_lookup(args[1], scope)
            value = given if _truthy(given) else fallback
        elif name == "quote" and len(args) + len(piped) == 1:
            text = _format(piped[0] if piped else _literal_or_lookup(args[0], scope))
            value = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif name == "b64enc" and len(args) + len(piped) == 1:
            text = _format(piped[0] if piped else _literal_or_lookup(args[0], scope))
            value = base64.b64encode(text.encode()).decode()
        elif name == "toYaml" and len(args) + len(piped) == 1:
            value = _to_yaml(piped[0] if piped else _literal_or_lookup(args[0], scope))
        elif name == "nindent" and len(args) == 1 and len(piped) == 1:
            pad = " " * int(args[0])
            value = "\n" + "\n".join(pad + line for line in str(piped[0]).splitlines())
        else:
            raise ChartError(f"unsupported template command {' '.join(cmd)!r}")
    return value


def _render_text(text: str, scope: Mapping[str, Any]) -> str:
    # Split into literal text and actions, applying {{- and -}} trimming.
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        literal = text[pos : m.start()]
        if m.group(1):
            literal = literal.rstrip()
        if parts and parts[-1][0] == "trim-next":
            parts.pop()
            literal = literal.lstrip()
        parts.append(("text", literal))
        parts.append(("action", m.group(2)))
        if m.group(3):
            parts.append(("trim-next", ""))
        pos = m.end()
    tail = text[pos:]
    if parts and parts[-1][0] == "trim-next":
        parts.pop()
        tail = tail.lstrip()
    parts.append(("text", tail))

    out: list[str] = []
    # a stack of (emitting?, branch already taken?) for nested ifs
    stack: list[tuple[bool, bool]] = []

    def emitting() -> bool:
        return all(e for e, _ in stack)

    for kind, body in parts:
        if kind == "text":
            if emitting():
                out.append(body)
            continue
        words = body.split(None, 1)
        keyword = words[0] if words else ""
        if keyword == "if":
            cond = emitting() and _truthy(_evaluate(words[1], scope))
            stack.append((cond, cond))
        elif keyword == "else":
            if not stack:
                raise ChartError("{{ else }} without {{ if }}")
            _, taken = stack.pop()
            stack.append((not taken, True))
        elif keyword == "end":
            if not stack:
                raise ChartError("{{ end }} without {{ if }}")
            stack.pop()
        elif keyword in ("range", "with", "define", "template", "include", "block"):
            raise ChartError(f"unsupported template action {keyword!r}")
        elif emitting():
            out.append(_format(_evaluate(body, scope)))
    if stack:
        raise ChartError("{{ if }} without {{ end }}")
    return "".join(out)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render_chart(
    chart: Path,
    values: Mapping[str, Any] | None = None,
    release: str = "shoal",
    namespace: str = "default",
) -> dict[str, list[dict[str, Any]]]:
    """Render every ``templates/*.yaml`` as ``helm template`` would; return each
    template's objects by file name (``values`` override ``values.yaml``, as
    ``--set``/``-f`` do)."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    scope = {
        "Values": _merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, values or {}),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {k[:1].upper() + k[1:]: v for k, v in meta.items()},
    }
    rendered = {}
    for path in sorted((chart / "templates").glob("*.yaml")):
        text = _render_text(path.read_text(), scope)
        rendered[path.name] = [d for d in yaml.safe_load_all(text) if d is not None]
    return rendered


def load_manifests(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Every object of every ``*.yaml`` in ``directory``, by file name."""
    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        for path in sorted(directory.glob("*.yaml"))
    }


# ---------------------------------------------------------------------- validation

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "bytes": (str,),  # base64 in YAML
    "datetime": (str,),
    "date": (str,),
    "object": (object,),  # IntOrString, Quantity, free-form
}


def _check(value: Any, type_name: str, where: str, errors: list[str]) -> None:
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name])
        if type_name in ("int", "float") and isinstance(value, bool):
            ok = False
        if not ok:
            errors.append(f"{where}: expected {type_name}, got {type(value).__name__}")
        return
    if m := re.fullmatch(r"(?:List|list)\[(.+)\]", type_name):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, m.group(1), f"{where}[{i}]", errors)
        return
    if m := re.fullmatch(r"(?:Dict\[|dict\()str, (.+)[\])]", type_name):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check(item, m.group(1), f"{where}.{key}", errors)
        return
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        errors.append(f"{where}: expected a {type_name} map, got {type(value).__name__}")
        return
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            errors.append(f"{where}: {key!r} is not a field of {type_name}")
            continue
        _check(item, model.openapi_types[by_json[key]], f"{where}.{key}", errors)


def check_object(obj: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``obj`` by the Kubernetes schema of its kind ([] if nothing)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in MODELS:
        return [f"unexpected kind {key!r}: add its model to MODELS"]
    model = MODELS[key]  # type: ignore[index]
    errors: list[str] = []
    _check(dict(obj), model, str(key[1]), errors)
    if not errors:
        # builds the model objects, whose setters refuse missing required fields
        try:
            k8s.ApiClient()._ApiClient__deserialize(copy.deepcopy(dict(obj)), model)  # type: ignore[attr-defined]
        except ValueError as e:
            errors.append(f"{key[1]}: {e}")
    return errors
