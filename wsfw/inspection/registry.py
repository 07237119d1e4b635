"""Inspector factories by name: the built-ins, plus third-party ones from entry points.

Third-party factories are registered under the ``wsfw.inspectors`` entry-point
group and verified against ``IInspectorFactory`` when loaded (Buildbot's
plugin model), so a broken plugin is a config error naming it, not a crash on
the first message.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from wsfw.interfaces import IInspectorFactory

GROUP = "wsfw.inspectors"


def builtins() -> dict:
    from wsfw.inspection.detect import DetectFactory
    from wsfw.inspection.leaks import LeaksFactory

    return {factory.name: factory for factory in (DetectFactory(), LeaksFactory())}


def factories() -> tuple[dict, list[str]]:
    """All factories by name, and a message for each plugin that could not be loaded."""
    found, errors = builtins(), []
    for ep in entry_points(group=GROUP):
        try:
            factory = ep.load()
            if isinstance(factory, type):
                factory = factory()
            verifyObject(IInspectorFactory, factory)
        except (Exception, Invalid) as e:  # a plugin's import error is its author's, reported by name
            errors.append(f"inspector plugin {ep.name!r} ({ep.value}) cannot be used: {type(e).__name__}: {e}")
            continue
        if ep.name in found:
            errors.append(f"inspector plugin {ep.name!r} ({ep.value}) clashes with an inspector of that name")
            continue
        found[ep.name] = factory
    return found, errors
