"""Reading a Prometheus endpoint: counter values and histogram quantile bounds."""

from __future__ import annotations

import urllib.request


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def histogram_quantile(values: dict[str, float], metric: str, q: float, labels: str = "") -> float | None:
    """The upper bound of the bucket holding the q-quantile (what histogram_quantile rounds to);
    `labels` picks one series, as it stands before `le` (`generation="2",`)."""
    buckets = sorted(
        (float(name.split('le="')[1].split('"')[0]), count)
        for name, count in values.items()
        if name.startswith(f"{metric}_bucket{{{labels}")
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return None
