"""A fast yes/no for the JSON Schemas operators usually write, exact to ``jsonschema``'s verdict.

``jsonschema`` walks a schema keyword by keyword through generic machinery (tens of µs
for a three-keyword schema), which the positive model would pay on every message. For a
schema made only of the keywords below, :func:`compile_schema` builds plain closures that
give the same verdict as ``Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
.is_valid`` -- each keyword mirrors ``jsonschema/_keywords.py`` (the same type checker, the
same ``equal``, ``re.search`` and format checker) and a property test holds the two equal.
Anything else (``$ref``, ``unevaluated*``, ``multipleOf``, ``uniqueItems``, ``contains``,
``dependent*``, ``propertyNames``) makes it return None, and ``jsonschema`` decides alone.
``jsonschema`` also always explains a failure: this only says "valid" faster.
"""

from __future__ import annotations

import functools
import re

from jsonschema import Draft202012Validator
from jsonschema._utils import equal

__all__ = ["compile_schema"]

_KEYWORDS = frozenset(Draft202012Validator.VALIDATORS)
_SUPPORTED = frozenset((
    "type", "enum", "const", "format", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "items", "prefixItems", "minItems", "maxItems", "properties",
    "required", "additionalProperties", "patternProperties", "minProperties", "maxProperties", "allOf", "anyOf",
    "oneOf", "not", "if",
))
_CHECKER = Draft202012Validator.TYPE_CHECKER
_FORMATS = Draft202012Validator.FORMAT_CHECKER


class Unsupported(Exception):
    pass


def _is(type_name):
    """The type test of Draft 2020-12's checker for ``type_name``: its own function, bound once
    (``TypeChecker.is_type`` looks it up on every call)."""
    try:
        return functools.partial(_CHECKER._type_checkers[type_name], _CHECKER)
    except (AttributeError, KeyError, TypeError):  # another jsonschema's internals: the public way
        return lambda instance: _CHECKER.is_type(instance, type_name)


_TYPES = {name: _is(name) for name in ("array", "boolean", "integer", "null", "number", "object", "string")}


def compile_schema(schema):
    """``instance -> bool`` exactly as jsonschema would decide, or None for schemas outside the subset."""
    try:
        return _compile(schema, 0)
    except Unsupported:
        return None


def _compile(schema, depth):
    if depth > 32:
        raise Unsupported("too deep")
    if schema is True:
        return lambda instance: True
    if schema is False:
        return lambda instance: False
    if not isinstance(schema, dict):
        raise Unsupported("not a schema")
    keys = _KEYWORDS.intersection(schema)
    if not keys <= _SUPPORTED:
        raise Unsupported(", ".join(sorted(keys - _SUPPORTED)))
    checks = []
    for key in sorted(keys):
        checks.append(_KEYWORD[key](schema[key], schema, depth + 1))
    if not checks:
        return lambda instance: True
    if len(checks) == 1:
        return checks[0]
    checks = tuple(checks)

    def all_checks(instance):
        for check in checks:
            if not check(instance):
                return False
        return True
    return all_checks


def _type(value, schema, depth):
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if name not in _TYPES:
            raise Unsupported(f"type {name!r}")
    tests = tuple(_TYPES[name] for name in names)
    if len(tests) == 1:
        return tests[0]
    return lambda instance: any(test(instance) for test in tests)


def _enum(value, schema, depth):
    members = list(value)
    return lambda instance: any(equal(each, instance) for each in members)


def _const(value, schema, depth):
    return lambda instance: equal(instance, value)


def _format(value, schema, depth):
    return lambda instance: _FORMATS.conforms(instance, value)


_string, _number, _array, _object = _TYPES["string"], _TYPES["number"], _TYPES["array"], _TYPES["object"]


def _min_length(value, schema, depth):
    return lambda instance: not _string(instance) or not len(instance) < value


def _max_length(value, schema, depth):
    return lambda instance: not _string(instance) or not len(instance) > value


def _pattern(value, schema, depth):
    return lambda instance: not _string(instance) or re.search(value, instance) is not None


def _minimum(value, schema, depth):
    return lambda instance: not _number(instance) or not instance < value


def _maximum(value, schema, depth):
    return lambda instance: not _number(instance) or not instance > value


def _exclusive_minimum(value, schema, depth):
    return lambda instance: not _number(instance) or not instance <= value


def _exclusive_maximum(value, schema, depth):
    return lambda instance: not _number(instance) or not instance >= value


def _min_items(value, schema, depth):
    return lambda instance: not _array(instance) or not len(instance) < value


def _max_items(value, schema, depth):
    return lambda instance: not _array(instance) or not len(instance) > value


def _min_properties(value, schema, depth):
    return lambda instance: not _object(instance) or not len(instance) < value


def _max_properties(value, schema, depth):
    return lambda instance: not _object(instance) or not len(instance) > value


def _prefix_items(value, schema, depth):
    subs = [_compile(s, depth) for s in value]

    def prefix_items(instance):
        if not _array(instance):
            return True
        for item, sub in zip(instance, subs):
            if not sub(item):
                return False
        return True
    return prefix_items


def _items(value, schema, depth):
    prefix = len(schema.get("prefixItems", []))
    sub = _compile(value, depth)

    def items(instance):
        if not _array(instance):
            return True
        for item in instance[prefix:]:
            if not sub(item):
                return False
        return True
    return items


def _properties(value, schema, depth):
    subs = [(name, _compile(s, depth)) for name, s in value.items()]

    def properties(instance):
        if not _object(instance):
            return True
        for name, sub in subs:
            if name in instance and not sub(instance[name]):
                return False
        return True
    return properties


def _required(value, schema, depth):
    names = list(value)
    return lambda instance: not _object(instance) or all(name in instance for name in names)


def _pattern_properties(value, schema, depth):
    subs = [(pattern, _compile(s, depth)) for pattern, s in value.items()]

    def pattern_properties(instance):
        if not _object(instance):
            return True
        for pattern, sub in subs:
            for k, v in instance.items():
                if re.search(pattern, k) and not sub(v):
                    return False
        return True
    return pattern_properties


def _additional_properties(value, schema, depth):
    properties = schema.get("properties", {})
    patterns = "|".join(schema.get("patternProperties", {}))
    if value is True or (isinstance(value, dict) and not value):
        return lambda instance: True
    sub = _compile(value, depth) if isinstance(value, dict) else None

    def additional_properties(instance):
        if not _object(instance):
            return True
        for name in instance:
            if name in properties or (patterns and re.search(patterns, name)):
                continue
            if sub is None:  # additionalProperties: false (or another falsy value)
                return False
            if not sub(instance[name]):
                return False
        return True
    if not isinstance(value, dict) and value:  # a truthy non-schema: jsonschema checks nothing
        return lambda instance: True
    return additional_properties


def _all_of(value, schema, depth):
    subs = [_compile(s, depth) for s in value]
    return lambda instance: all(sub(instance) for sub in subs)


def _any_of(value, schema, depth):
    subs = [_compile(s, depth) for s in value]
    return lambda instance: any(sub(instance) for sub in subs)


def _one_of(value, schema, depth):
    subs = [_compile(s, depth) for s in value]
    return lambda instance: sum(1 for sub in subs if sub(instance)) == 1


def _not(value, schema, depth):
    sub = _compile(value, depth)
    return lambda instance: not sub(instance)


def _if(value, schema, depth):
    condition = _compile(value, depth)
    then = _compile(schema["then"], depth) if "then" in schema else None
    otherwise = _compile(schema["else"], depth) if "else" in schema else None

    def if_then_else(instance):
        if condition(instance):
            return then is None or then(instance)
        return otherwise is None or otherwise(instance)
    return if_then_else


_KEYWORD = {
    "type": _type, "enum": _enum, "const": _const, "format": _format, "minLength": _min_length,
    "maxLength": _max_length, "pattern": _pattern, "minimum": _minimum, "maximum": _maximum,
    "exclusiveMinimum": _exclusive_minimum, "exclusiveMaximum": _exclusive_maximum, "items": _items,
    "prefixItems": _prefix_items, "minItems": _min_items, "maxItems": _max_items, "properties": _properties,
    "required": _required, "additionalProperties": _additional_properties, "patternProperties": _pattern_properties,
    "minProperties": _min_properties, "maxProperties": _max_properties, "allOf": _all_of, "anyOf": _any_of,
    "oneOf": _one_of, "not": _not, "if": _if,
}
