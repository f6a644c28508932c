"""`make test`'s coverage gate: the branch coverage of each product package, from the run's
combined data (the test process and every worker, gateway and demo process the tests started),
and the line coverage of the page's scripts (tests/support/jscoverage.py) when the browser tests
ran. Exits 1 when any of them is under FAIL_UNDER percent.

Run after `pytest --cov`: `python -m tests.support.coverage_gate`.
"""

from __future__ import annotations

import io
import sys

import coverage

from tests.support import jscoverage

PACKAGES = ("streams", "projections", "app")
FAIL_UNDER = 85.0


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    under = []
    print(f"branch coverage by package (statements and branches; the gate is {FAIL_UNDER:.0f}%):")
    for package in PACKAGES:
        percent = cov.report(include=[f"{package}/*"], file=io.StringIO())
        verdict = "ok" if percent >= FAIL_UNDER else "UNDER"
        print(f"  {package + '/':14} {percent:5.1f}%  {verdict}")
        if percent < FAIL_UNDER:
            under.append(package)
    if not jscoverage.RAW.exists():
        print("  (no browser test ran: the page's scripts were not measured)")
    for script in jscoverage.measure():
        name = str(script.path.relative_to(jscoverage.ROOT))
        verdict = "ok" if script.percent >= FAIL_UNDER else "UNDER"
        print(f"  {name:14} {script.percent:5.1f}%  {verdict} (lines)")
        if script.percent < FAIL_UNDER:
            under.append(name)
    if under:
        print(f"coverage gate failed: {', '.join(under)} under {FAIL_UNDER:.0f}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
