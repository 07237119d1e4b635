"""Several workers' admin answers merged into one: what a supervisor's admin listener serves.

Pure functions over what the workers answered (parsed Prometheus families,
``/api/stats`` bodies), so they are tested without processes. The fetching
lives in :mod:`wsfw.admin.fleet`.

* **Metrics**: every sample gets a ``worker`` label, and the families of
  the same name are joined, so ``sum by (worker)`` and ``sum without
  (worker)`` both work and no worker's counters overwrite another's.
* **Stats**: what is a count or a gauge is summed; the per-step rate series
  are aligned on the step grid before summing (each worker samples on its own
  timer); the top rules and clients are recounted from each worker's longer
  list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

#: The label every merged sample carries: the worker's number, or ``supervisor``.
WORKER_LABEL = "worker"
TOP = 10


class Families:
    """Metric families already collected, in the shape ``generate_latest`` reads
    (anything with ``collect()``): the merged scrape never touches a registry."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self):
        return iter(self.families)


def relabel(families: Iterable[Metric], worker: str) -> Iterable[Metric]:
    """``families`` with ``worker=`` first in every sample's labels."""
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={WORKER_LABEL: worker, **s.labels}) for s in family.samples]
        yield copy


def merge_families(parts: Iterable[tuple[str, Iterable[Metric]]]) -> list[Metric]:
    """One family per name holding every part's samples, each labelled with its part's worker.

    A family whose type differs from the first one seen under its name (a
    worker of another wsfw version, mid-upgrade) is left out rather than
    producing an exposition Prometheus would reject.
    """
    merged: dict[str, Metric] = {}
    for worker, families in parts:
        for family in relabel(families, worker):
            into = merged.get(family.name)
            if into is None:
                merged[family.name] = family
            elif into.type == family.type:
                into.samples.extend(family.samples)
    return list(merged.values())


def exposition(families: Iterable[Metric]) -> bytes:
    """Prometheus text exposition of ``families`` (``prometheus_client`` writes it, not us)."""
    return generate_latest(Families(families))


# -- /api/stats ----------------------------------------------------------------------


def sum_totals(parts: Iterable[dict]) -> dict:
    """Numbers summed key by key; dicts of numbers (per direction) summed per key."""
    out: dict = {}
    for totals in parts:
        for key, value in totals.items():
            if isinstance(value, dict):
                into = out.setdefault(key, {})
                for sub, number in value.items():
                    if _number(number):
                        into[sub] = into.get(sub, 0) + number
            elif _number(value):
                out[key] = out.get(key, 0) + value
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_series(parts: list[dict], step: float) -> dict:
    """The workers' per-step series summed on a common grid of ``step`` seconds.

    Each worker samples every ``step`` seconds from its own start, so its
    points are put in the grid slot they fall into, carried forward over a
    slot its timer happened to skip, and counted only between its first and
    last point (before it started it carried nothing). The merged series ends
    at the newest slot every worker has reached, so the last point never
    dips because one worker has not sampled yet.
    """
    keys = sorted({key for series in parts for key in series if key != "t"})
    workers = []
    for series in parts:
        times = series.get("t") or []
        slots: dict[int, dict] = {}
        for i, when in enumerate(times):
            slots[math.floor(when / step)] = {key: _at(series.get(key), i) for key in keys}
        if slots:
            workers.append((min(slots), max(slots), slots))
    out: dict = {"t": [], **{key: [] for key in keys}}
    if not workers:
        return out
    start, end = min(w[0] for w in workers), min(w[1] for w in workers)
    carried: list[dict | None] = [None] * len(workers)
    for slot in range(start, end + 1):
        sums = dict.fromkeys(keys, 0)
        for n, (first, last, slots) in enumerate(workers):
            if slot < first or slot > last:
                continue
            carried[n] = slots.get(slot, carried[n])
            for key in keys:
                sums[key] += (carried[n] or {}).get(key) or 0
        out["t"].append(round(slot * step, 3))
        for key in keys:
            out[key].append(round(sums[key], 3) if isinstance(sums[key], float) else sums[key])
    return out


def _at(values, i: int):
    return values[i] if isinstance(values, list) and i < len(values) and _number(values[i]) else 0


def merge_top(parts: Iterable[list[dict]], key_fields: tuple[str, ...], n: int = TOP) -> list[dict]:
    """Entries with equal ``key_fields`` counted together; the ``n`` largest, ties by key."""
    counts: dict[tuple, int] = {}
    for entries in parts:
        for entry in entries:
            key = tuple(entry.get(f) for f in key_fields)
            counts[key] = counts.get(key, 0) + (entry.get("count") or 0)
    best = sorted(counts.items(), key=lambda kv: (-kv[1], tuple(str(k) for k in kv[0])))[:n]
    return [{**dict(zip(key_fields, key)), "count": count} for key, count in best]


def merge_stats(parts: list[tuple[str, dict]], base: dict, step: float) -> dict:
    """``/api/stats`` for the whole fleet from each worker's (label, body).

    ``base`` holds what the supervisor answers itself (version, time, uptime,
    readiness, routes, step and window). ``workers`` lists each answering
    worker's own figures, for operators; the dashboard ignores it.
    """
    bodies = [body for _, body in parts]
    return {
        **base,
        "totals": sum_totals(body.get("totals") or {} for body in bodies),
        "series": merge_series([body.get("series") or {} for body in bodies], step),
        "top_rules": merge_top((body.get("top_rules") or [] for body in bodies), ("rule", "class")),
        "top_clients": merge_top((body.get("top_clients") or [] for body in bodies), ("client",)),
        "workers": [{"worker": label, "ready": bool(body.get("ready")),
                     "connections_open": (body.get("totals") or {}).get("connections_open", 0)}
                    for label, body in parts],
    }
