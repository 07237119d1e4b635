"""Operator policy: rules (``[rule:ID]``) and per-route positive models (``[model:ROUTE]``).

- ``lang``: the ``when =`` condition language (lexer, parser, compiler);
- ``glob``: parameter path and operation name patterns;
- ``runtime``: compiled rules, the per-route Policy that indexes and evaluates them,
  per-connection state (handshake-derived values, rate-limit buckets);
- ``model``: the positive model (allow-listed operations, JSON Schemas for their arguments);
- ``loader``: ini sections of the main config and of the rule files -> PolicyConfig, with
  every problem reported by file, section, key and reason.

The inspection pipeline (wsfw.inspection.pipeline) runs a route's policy around its
inspectors: rules before detection, then the positive model, then the inspectors with the
matching exclusions, then the rules that test detection results. A route with no rules and
no model pays one attribute check per message.
"""
