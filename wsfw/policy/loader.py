"""Rules and positive models from ini sections: the main config's and the rule files'.

Called by the config loader (wsfw.config_ini), so ``wsfw check-config`` reports every bad
rule, condition, schema and rule file with file, section, key and reason, together with the
rest of the configuration's problems.
"""

from __future__ import annotations

import configparser
import difflib
import glob as globbing
import hashlib
import json
import os
import re

import attrs

from wsfw.errors import Problem
from wsfw.relay import CLIENT, UPSTREAM

from .glob import has_wildcards
from .lang import POST_FIELDS, ParseError
from .model import UNKNOWN_ACTIONS, Entry, Model
from .runtime import ACTIONS, Exclusion, Rule, compile_expr

__all__ = ["PolicyConfig", "load_policy", "parse_rate", "RULE_KEYS", "MODEL_KEYS", "MESSAGE_KEYS"]

RULE_KEYS = ("priority", "route", "direction", "phase", "when", "action", "msg", "tag", "param", "detector",
             "signature", "rate", "burst", "exceed")
MODEL_KEYS = ("unknown", "allow")
MESSAGE_KEYS = ("schema", "schema_file")
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
#: ``COUNT/PERIOD``: ``10/s``, ``600/m``, ``1000/h``; with a byte unit on the count (``1MiB/s``) where
#: sizes are allowed. The one rate syntax of wsfw: rules' ``rate =`` and ``[limits]``' rates.
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*/\s*(s|sec|second|m|min|minute|h|hour)"
                   r"\s*$", re.I)
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE_SIZES = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
               "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_ONLY_FOR = {"param": "exclude", "detector": "exclude", "signature": "exclude", "rate": "rate-limit",
             "burst": "rate-limit", "exceed": "rate-limit"}


def parse_rate(text: str, sizes: bool = False) -> tuple[float, float] | None:
    """``(count, period in seconds)`` of a rate such as ``10/s``, or None when ``text`` is not one.

    With ``sizes``, the count may carry a byte unit (``64KiB/s``, ``1MiB/s``) and is
    returned in bytes; without, a unit makes it no rate (a message count has none).
    """
    m = _RATE.match(text or "")
    if m is None or (m.group(2) and not sizes):
        return None
    count = float(m.group(1)) * (_RATE_SIZES[m.group(2).lower()] if m.group(2) else 1)
    return count, _PER[m.group(3).lower()]


@attrs.frozen
class PolicyConfig:
    """Every rule and positive model of a configuration, compiled."""

    rules: tuple = ()
    models: tuple = ()  # Model per route
    files: tuple[str, ...] = ()  # the rule files read, in order
    #: (path, sha256 of its text) of every rule and schema file read: part of the policy version.
    sources: tuple[tuple[str, str], ...] = ()

    def for_route(self, route: str):
        """(rules, model) of one route; ([], None) when it has neither."""
        rules = [r for r in self.rules if r.applies_to(route)]
        model = next((m for m in self.models if m.route == route), None)
        return rules, model

    def __bool__(self) -> bool:
        return bool(self.rules or self.models)


def new_parser() -> configparser.ConfigParser:
    """The main config's ini dialect (wsfw.config_ini), also for rule files."""
    return configparser.ConfigParser(interpolation=None, strict=True, inline_comment_prefixes=(";", "#"),
                                     default_section="\0none")


def _items(parser, section) -> dict[str, str]:
    return dict(parser.items(section))


def split_names(text: str) -> list[str]:
    """A list value: words or "double-quoted" / 'single-quoted' names, separated by spaces or commas."""
    from .lang import lex

    out = []
    for token in lex(text):
        if token.kind in ("word", "string"):
            out.append(token.value)
        elif token.kind == "eof":
            break
        elif token.kind != ",":
            raise ParseError(f"unexpected {token.text!r} in a list of names (quote names that contain it)", token.pos)
    return out


def known_detection_ids() -> tuple[frozenset[str], frozenset[str]]:
    """(detector classes, signature ids) of the built-in detectors and inspectors."""
    from wsfw.detect import _PATH_RULES
    from wsfw.detect.rules import RULES
    from wsfw.inspection.leaks import SIGNATURES

    classes = {r[1] for r in RULES} | {r[1] for r in _PATH_RULES} | {"sqli", "xss", "info_leak"}
    ids = ({r[0] for r in RULES} | {r[0] for r in _PATH_RULES} | {s[0] for s in SIGNATURES}
           | {"sqli-libinjection", "sqli-libinjection-weak", "xss-libinjection"})
    return frozenset(classes), frozenset(ids)


class _PolicyLoader:
    def __init__(self, main_path: str, routes, problems: list[Problem]):
        self.main_path = main_path
        self.routes = {r.name: r for r in routes if r is not None}
        self.problems = problems
        self.rules: list[Rule] = []
        self.rule_where: dict[str, str] = {}
        self.models: dict[str, tuple[str, dict]] = {}  # route -> (where, items)
        self.model_files: dict[str, str] = {}
        self.entries: dict[str, dict[str, tuple[str, object]]] = {}  # route -> name -> (where, (validator, fast) or None)
        self.entry_sections: list = []
        self.sources: list[tuple[str, str]] = []
        self.seq = 0
        self._known = None

    def problem(self, file, section, key, message):
        self.problems.append(Problem(file, section, key, message))

    # -- sections --------------------------------------------------------------

    def section(self, file: str, parser, name: str) -> None:
        kind, _, label = name.partition(":")
        items = _items(parser, name)
        if kind == "rule":
            self.rule(file, name, label, items)
        elif kind == "model":
            route, sep, op_name = label.partition(":")
            if not route:
                self.problem(file, name, None, "needs a route name: [model:ROUTE] or [model:ROUTE:NAME]")
            elif sep:
                self.entry_sections.append((file, name, route, op_name, items))
            else:
                self.model(file, name, route, items)

    def check_keys(self, file, section, items, allowed) -> None:
        for key in items:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(allowed)})"
                self.problem(file, section, key, f"unknown key{hint}")

    def route_names(self, file, section, key, text) -> tuple[str, ...] | None:
        names = text.replace(",", " ").split()
        if names == ["*"]:
            return None
        for name in names:
            if name not in self.routes:
                near = difflib.get_close_matches(name, list(self.routes), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (routes: {', '.join(self.routes) or 'none'})"
                self.problem(file, section, key, f"no [route:{name}]{hint}")
        return tuple(names)

    def rule(self, file, section, rule_id, items) -> None:
        problems_before = len(self.problems)

        def bad(key, message):
            self.problem(file, section, key, message)

        if not _ID.match(rule_id):
            bad(None, "needs an id of letters, digits, '.', '_' or '-', e.g. [rule:no-admin-delete]")
            return
        if rule_id in self.rule_where:
            bad(None, f"rule id {rule_id!r} is already used by {self.rule_where[rule_id]}")
            return
        self.rule_where[rule_id] = f"{file}: [{section}]"
        self.check_keys(file, section, items, RULE_KEYS)
        get = {k: v.strip() for k, v in items.items()}
        action = get.get("action", "").lower()
        if not action:
            bad("action", f"is required: one of {', '.join(ACTIONS)}")
        elif action not in ACTIONS:
            near = difflib.get_close_matches(action, ACTIONS, n=1)
            bad("action", f"{action!r} is not one of {', '.join(ACTIONS)}"
                + (f" (did you mean {near[0]!r}?)" if near else ""))
        for key, only in _ONLY_FOR.items():
            if key in get and action and action != only:
                bad(key, f"only applies to action = {only}")
        priority = 100
        if get.get("priority"):
            try:
                priority = int(get["priority"])
            except ValueError:
                bad("priority", f"{get['priority']!r} is not a whole number (lower runs first)")
        routes = self.route_names(file, section, "route", get["route"]) if get.get("route") else None
        direction = (get.get("direction") or CLIENT).lower()
        if direction not in (CLIENT, UPSTREAM, "both"):
            bad("direction", f"{direction!r} is not one of client, upstream, both")
            direction = CLIENT
        if direction == UPSTREAM:
            inspected = [r for name, r in self.routes.items() if (routes is None or name in routes) and r.inspect_upstream]
            if not inspected:
                bad("direction", "upstream messages are inspected only on routes with inspect_upstream = yes, and "
                    "none of this rule's routes has it: the rule would never run")
        phase = (get.get("phase") or "message").lower()
        if phase != "message":
            if phase == "handshake":
                bad("phase", "leave it out: a rule whose conditions test only the handshake (client, origin, "
                    "header:, cookie:, query:, path, param:\"handshake.*\") already judges the handshake itself "
                    "(a block refuses the upgrade with 403) and every message of the connection")
            else:
                bad("phase", f"{phase!r} is not a phase (message)")
        expr = None
        if get.get("when"):
            try:
                expr = compile_expr(get["when"])
            except ParseError as e:
                bad("when", e.where(get["when"]))
        if expr is not None and expr.fields & POST_FIELDS and action in ("allow", "exclude"):
            bad("action", f"{action} cannot depend on detection results ({', '.join(sorted(expr.fields & POST_FIELDS))})"
                + ("; to silence a detector on one parameter write an exclude rule" if action == "allow" else
                   ": exclusions apply before the detectors run"))
        exclusion = None
        if action == "exclude":
            exclusion = self.exclusion(file, section, get, routes, bad)
        per_second, burst, exceed, rate_text = 0.0, 1, "block", ""
        if action == "rate-limit":
            rate_text = get.get("rate", "")
            rate = parse_rate(rate_text)
            if not rate_text:
                bad("rate", "is required for rate-limit, e.g. 10/s, 100/m, 1000/h")
            elif rate is None or rate[0] <= 0:
                bad("rate", f"{rate_text!r} is not a rate (e.g. 10/s, 100/m, 1000/h)")
            else:
                per_second = rate[0] / rate[1]
            default_burst = max(1, int(rate[0])) if rate else 1
            burst = default_burst
            if get.get("burst"):
                try:
                    burst = int(get["burst"])
                    if burst < 1:
                        raise ValueError
                except ValueError:
                    bad("burst", f"{get['burst']!r} is not a whole number of at least 1")
                    burst = default_burst
            exceed = (get.get("exceed") or "block").lower()
            if exceed not in ("block", "drop", "log"):
                bad("exceed", f"{exceed!r} is not one of block, drop, log")
        tags = get.get("tag", "").replace(",", " ").split()
        if len(self.problems) > problems_before:
            return
        self.seq += 1
        self.rules.append(Rule(id=rule_id, priority=priority, seq=self.seq, routes=routes, direction=direction,
                               expr=expr, action=action, msg=get.get("msg") or None, tags=tags, exclusion=exclusion,
                               per_second=per_second, burst=burst, exceed=exceed, rate_text=rate_text,
                               where=f"{file}: [{section}]"))

    def exclusion(self, file, section, get, routes, bad) -> Exclusion | None:
        if routes is None and get.get("route", "").strip() != "*":
            bad("route", "an exclusion needs the route(s) it applies to (route = NAME; '*' for every route, "
                "deliberately)")
        param = get.get("param", "")
        if param.startswith(('"', "'")) and param.endswith(param[0]) and len(param) > 1:
            param = param[1:-1]
        if not param:
            bad("param", "an exclusion needs the parameter path glob it applies to, e.g. "
                "param = socketio.args[0].text ('**' for every parameter, deliberately)")
        ids = []
        classes, signatures = self._known or known_detection_ids()
        self._known = (classes, signatures)
        for key, known, what in (("detector", classes, "detector"), ("signature", signatures, "signature id")):
            for name in get.get(key, "").replace(",", " ").split():
                if name not in known:
                    near = difflib.get_close_matches(name, known, n=1)
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    bad(key, f"no {what} {name!r}{hint}")
                ids.append(name)
        if not get.get("detector") and not get.get("signature"):
            bad("detector", "an exclusion needs the detector (e.g. detector = xss) or the signature id "
                "(signature = xss-004) it silences")
        if not param or not ids:
            return None
        return Exclusion(param, ids)

    def model(self, file, section, route, items) -> None:
        self.check_keys(file, section, items, MODEL_KEYS)
        if route not in self.routes:
            near = difflib.get_close_matches(route, list(self.routes), n=1)
            hint = f" (did you mean [model:{near[0]}]?)" if near else ""
            self.problem(file, section, None, f"no [route:{route}]{hint}")
            return
        if route in self.models:
            self.problem(file, section, None, f"the model of route {route!r} is already defined in "
                         f"{self.models[route][0]}")
            return
        unknown = items.get("unknown", "").strip().lower()
        if not unknown:
            self.problem(file, section, "unknown", "is required: what happens to a message the model does not "
                         "list (block, log or allow)")
        elif unknown not in UNKNOWN_ACTIONS:
            self.problem(file, section, "unknown", f"{unknown!r} is not one of block, log, allow")
        self.models[route] = (f"{file}: [{section}]", items)
        self.entries.setdefault(route, {})
        try:
            names = split_names(items.get("allow", ""))
        except ParseError as e:
            self.problem(file, section, "allow", e.where(items.get("allow", "")))
            names = []
        for name in names:
            self.add_entry(file, section, "allow", route, name, None)

    def add_entry(self, file, section, key, route, name, validator) -> None:
        entries = self.entries.setdefault(route, {})
        if name in entries:
            self.problem(file, section, key, f"{name!r} is already allowed by {entries[name][0]}")
            return
        entries[name] = (f"{file}: [{section}]", validator)

    def entry(self, file, section, route, name, items) -> None:
        self.check_keys(file, section, items, MESSAGE_KEYS)
        if route not in self.routes:
            self.problem(file, section, None, f"no [route:{route}]")
            return
        if route not in self.models:
            self.problem(file, section, None, f"needs a [model:{route}] section saying what happens to other "
                         "messages (unknown = block, log or allow)")
            return
        if not name:
            self.problem(file, section, None, "needs an operation name: [model:ROUTE:NAME]")
            return
        inline, path = items.get("schema", "").strip(), items.get("schema_file", "").strip()
        validator = None
        if inline and path:
            self.problem(file, section, "schema_file", "give either schema or schema_file, not both")
            return
        if inline:
            try:
                schema = json.loads(inline)
            except ValueError as e:
                self.problem(file, section, "schema", f"not JSON: {e} (a value continues on lines indented "
                             "under the key; ' ;' and ' #' start comments)")
                return
            validator = self.validator(file, section, "schema", schema)
        elif path:
            full = path if os.path.isabs(path) else os.path.join(os.path.dirname(os.path.abspath(file)), path)
            try:
                with open(full, encoding="utf-8") as f:
                    text = f.read()
                self.sources.append((full, hashlib.sha256(text.encode("utf-8")).hexdigest()))
                schema = json.loads(text)
            except OSError as e:
                self.problem(file, section, "schema_file", f"cannot read {full!r}: {e.strerror or e}")
                return
            except ValueError as e:
                self.problem(file, section, "schema_file", f"{full!r} is not JSON: {e}")
                return
            validator = self.validator(file, section, "schema_file", schema)
        if (inline or path) and validator is None:
            return
        self.add_entry(file, section, None, route, name, validator)

    def validator(self, file, section, key, schema):
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        if not isinstance(schema, (dict, bool)):
            self.problem(file, section, key, "a JSON Schema is an object (or true / false)")
            return None
        if isinstance(schema, dict) and schema.get("$schema") not in (None, _DRAFT, _DRAFT + "#"):
            self.problem(file, section, key, f"$schema {schema['$schema']!r}: wsfw validates with JSON Schema "
                         f"draft 2020-12 (leave $schema out, or set it to {_DRAFT})")
            return None
        remote = _remote_ref(schema)
        if remote is not None:
            self.problem(file, section, key, f"$ref {remote!r}: only references inside the schema (\"#/...\") are "
                         "supported; wsfw fetches nothing")
            return None
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "the top level"
            self.problem(file, section, key, f"invalid JSON Schema at {where}: {e.message}")
            return None
        from .fastschema import compile_schema

        return (Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER),
                compile_schema(schema))

    def finish(self) -> PolicyConfig:
        for file, section, route, name, items in self.entry_sections:
            self.entry(file, section, route, name, items)
        models = []
        for route, (where, items) in self.models.items():
            unknown = items.get("unknown", "").strip().lower()
            if unknown not in UNKNOWN_ACTIONS:
                continue
            entries = [Entry(name, compiled[0], w, compiled[1]) if compiled else Entry(name, None, w)
                       for name, (w, compiled) in self.entries.get(route, {}).items()]
            models.append(Model(route, unknown, entries, where))
        return PolicyConfig(rules=tuple(sorted(self.rules, key=lambda r: r.order)), models=tuple(models))


def _remote_ref(schema, depth=0):
    if depth > 64:
        return None
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str) and not value.startswith("#"):
                return value
            found = _remote_ref(value, depth + 1)
            if found is not None:
                return found
    elif isinstance(schema, list):
        for value in schema:
            found = _remote_ref(value, depth + 1)
            if found is not None:
                return found
    return None


def rule_files(main_path: str, patterns: tuple[str, ...], problems: list[Problem]) -> list[str]:
    """The rule files ``[inspection] rules`` names, in load order: each pattern's matches sorted,
    patterns in the order given. Relative patterns are relative to the main config's folder."""
    base = os.path.dirname(os.path.abspath(main_path))
    files: list[str] = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        if has_wildcards(pattern) or "[" in pattern:
            folder = os.path.dirname(full)
            if not has_wildcards(folder) and not os.path.isdir(folder):
                problems.append(Problem(main_path, "inspection", "rules", f"directory {folder!r} does not exist"))
                continue
            matches = sorted(p for p in globbing.glob(full) if os.path.isfile(p))
        elif not os.path.isfile(full):
            problems.append(Problem(main_path, "inspection", "rules", f"no such file {full!r}"))
            continue
        else:
            matches = [full]
        for path in matches:
            if path not in files:
                files.append(path)
    return files


def _read(path: str, problems: list[Problem], sources: list):
    parser = new_parser()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        sources.append((path, hashlib.sha256(text.encode("utf-8")).hexdigest()))
        parser.read_string(text, source=path)
    except OSError as e:
        problems.append(Problem(path, None, None, f"cannot read: {e.strerror or e}"))
        return None
    except UnicodeDecodeError as e:
        problems.append(Problem(path, None, None, f"not UTF-8 text: {e}"))
        return None
    except configparser.Error as e:
        from wsfw.config_ini import _parser_message

        problems.append(Problem(path, None, None, _parser_message(e)))
        return None
    return parser


def load_policy(main_path: str, parser, sections: list[str], patterns: tuple[str, ...], routes,
                problems: list[Problem]) -> PolicyConfig:
    """Compile the ``[rule:*]`` / ``[model:*]`` ``sections`` of the main config (``parser``) and
    of every rule file ``patterns`` name; problems are appended to ``problems``."""
    loader = _PolicyLoader(main_path, routes, problems)
    for name in sections:
        loader.section(main_path, parser, name)
    files = rule_files(main_path, patterns, problems)
    for path in files:
        rules_parser = _read(path, problems, loader.sources)
        if rules_parser is None:
            continue
        for name in rules_parser.sections():
            kind = name.partition(":")[0]
            if kind not in ("rule", "model"):
                problems.append(Problem(path, name, None, "a rules file holds only [rule:ID], [model:ROUTE] and "
                                        "[model:ROUTE:NAME] sections"))
                continue
            loader.section(path, rules_parser, name)
    return attrs.evolve(loader.finish(), files=tuple(files), sources=tuple(loader.sources))
