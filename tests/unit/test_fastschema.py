"""The positive model's fast schema check gives jsonschema's verdict, always (a property test)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from wsfw.policy.fastschema import compile_schema

NAMES = st.sampled_from(["a", "b", "text", "room", "x1"])
SCALARS = (st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False)
           | st.sampled_from([0.0, 1.0, 2.0, -1.0]) | st.text("ab1@.-:", max_size=6)
           | st.sampled_from(["a@b.c", "1.2.3.4", "::1", "2026-11-22", "6f1c8a52-7e52-4f3e-9d0b-1c2d3e4f5a6b"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES, inner, max_size=4),
                    max_leaves=12)
TYPES = st.sampled_from(["array", "boolean", "integer", "null", "number", "object", "string"])


def keyword_values(schemas):
    small = st.integers(0, 4)
    number = st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False)
    return st.one_of(
        st.tuples(st.just("type"), TYPES | st.lists(TYPES, min_size=1, max_size=3, unique=True)),
        st.tuples(st.just("enum"), st.lists(SCALARS, min_size=1, max_size=3)),
        st.tuples(st.just("const"), JSON),
        st.tuples(st.just("format"), st.sampled_from(["email", "ipv4", "ipv6", "date", "uuid", "no-such-format"])),
        st.tuples(st.sampled_from(["minLength", "maxLength", "minItems", "maxItems", "minProperties",
                                   "maxProperties"]), small),
        st.tuples(st.just("pattern"), st.sampled_from(["^a", "b$", "[0-9]", "^$", "a|1"])),
        st.tuples(st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]), number),
        st.tuples(st.sampled_from(["items", "additionalProperties", "not", "if", "then", "else"]), schemas),
        st.tuples(st.just("prefixItems"), st.lists(schemas, max_size=3)),
        st.tuples(st.sampled_from(["allOf", "anyOf", "oneOf"]), st.lists(schemas, min_size=1, max_size=3)),
        st.tuples(st.just("properties"), st.dictionaries(NAMES, schemas, max_size=3)),
        st.tuples(st.just("patternProperties"), st.dictionaries(st.sampled_from(["^a", "1", "^t"]), schemas,
                                                                max_size=2)),
        st.tuples(st.just("required"), st.lists(NAMES, max_size=3, unique=True)),
        st.tuples(st.sampled_from(["title", "$comment", "description"]), st.just("annotation")),
    )


SCHEMAS = st.recursive(st.booleans() | st.just({}),
                       lambda schemas: st.lists(keyword_values(schemas), max_size=4).map(dict), max_leaves=8)


@settings(max_examples=1500, deadline=None)
@given(SCHEMAS, JSON)
def test_fast_check_agrees_with_jsonschema(schema, instance):
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        assume(False)  # the loader refuses it anyway
    fast = compile_schema(schema)
    assert fast is not None, schema
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert fast(instance) == validator.is_valid(instance), (schema, instance)


def test_outside_the_subset_is_left_to_jsonschema():
    for schema in ({"$ref": "#/$defs/a", "$defs": {"a": {}}}, {"uniqueItems": True}, {"multipleOf": 2},
                   {"items": {"contains": {}}}, {"unevaluatedProperties": False}, {"propertyNames": {"maxLength": 1}}):
        assert compile_schema(schema) is None


def test_integers_as_json_schema_counts_them():
    fast = compile_schema({"type": "integer"})
    assert fast(1) and fast(1.0) and not fast(True) and not fast(1.5) and not fast("1")
