"""How every benchmark reports a figure: one JSON object a line, with its target.

A line holds ``bench``, ``metric``, ``value`` and ``unit``; where the figure compares with
a baseline measured in the same run, ``baseline`` and ``ratio`` (value / baseline); and
where it has a target, ``target`` (what it must reach, for a person) and ``met``. A
figure past its target is printed all the same: ``bench/report.py`` marks it ``MISS``
and counts the misses, so none is hidden.

Percentiles are only named when the samples support them: a p99 needs at least 100
samples and a p95 at least 20; with fewer, the figure is the maximum and says so.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any


def emit(
    bench: str,
    metric: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    at_most: float | None = None,
    at_least: float | None = None,
    ratio_at_most: float | None = None,
    ratio_at_least: float | None = None,
    **extra: Any,
) -> bool | None:
    """Print one figure; returns whether it met its target (None: it has none).

    Args:
        bench: the benchmark's name.
        metric: what was measured.
        value: the figure.
        unit: its unit.
        baseline: the same measure of the baseline, in the same run.
        at_most, at_least: a target on the value itself (in ``unit``).
        ratio_at_most, ratio_at_least: a target on value / baseline.
        extra: more keys for the line (counts checked, sample sizes).
    """
    line: dict[str, Any] = {"bench": bench, "metric": metric, "value": _round(value), "unit": unit}
    ratio = None
    if baseline is not None:
        line["baseline"] = _round(baseline)
        ratio = value / baseline if baseline else float("inf")
        line["ratio"] = _round(ratio)
    targets: list[tuple[str, bool]] = []
    if at_most is not None:
        targets.append((f"<= {_round(at_most)} {unit}", value <= at_most))
    if at_least is not None:
        targets.append((f">= {_round(at_least)} {unit}", value >= at_least))
    if ratio_at_most is not None and ratio is not None:
        targets.append((f"<= {ratio_at_most}x baseline", ratio <= ratio_at_most))
    if ratio_at_least is not None and ratio is not None:
        targets.append((f">= {ratio_at_least}x baseline", ratio >= ratio_at_least))
    met = None
    if targets:
        line["target"] = ", ".join(text for text, _ok in targets)
        met = all(ok for _text, ok in targets)
        line["met"] = met
    line.update({key: value for key, value in extra.items() if value is not None})
    print(json.dumps(line), flush=True)
    return met


def progress(bench: str, message: str) -> None:
    """Say what runs now, on stderr (the figures go to stdout)."""
    print(f"[{bench}] {message}", file=sys.stderr, flush=True)


def spread(samples: Sequence[float]) -> dict[str, float]:
    """The median and the upper percentiles the samples support.

    Returns:
        ``median``, and ``p95`` (20 samples or more), ``p99`` (100 or more); ``max``
        always, since with few samples it is the honest upper figure.
    """
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    found = {"median": statistics.median(ordered), "max": ordered[-1]}
    if len(ordered) >= 20:
        found["p95"] = _percentile(ordered, 0.95)
    if len(ordered) >= 100:
        found["p99"] = _percentile(ordered, 0.99)
    return found


def upper(samples: Sequence[float]) -> tuple[str, float]:
    """The highest percentile the samples support: ``("p99", v)``, else ``("p95", v)``,
    else ``("max", v)``."""
    found = spread(samples)
    for name in ("p99", "p95", "max"):
        if name in found:
            return name, found[name]
    raise AssertionError("spread always gives max")


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    # Nearest rank: the value below which ``fraction`` of the samples fall.
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _round(value: float) -> float:
    return round(value, 3) if isinstance(value, float) else value
