"""`make test`'s coverage gate: the branch coverage of each product package, from the run's
combined data (the test process and every worker, gateway and demo process the tests started),
and the line coverage of the pages' scripts together (tests/support/jscoverage.py; each one's is
in the report pytest prints) when the browser tests ran. Exits 1 when any is under FAIL_UNDER.

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
    scripts = jscoverage.measure()
    if not scripts:
        print("  (no browser test ran: the pages' scripts were not measured)")
    else:
        lines = sum(script.lines for script in scripts)
        percent = 100.0 * sum(script.covered_lines for script in scripts) / lines
        verdict = "ok" if percent >= FAIL_UNDER else "UNDER"
        names = ", ".join(script.path.name for script in scripts)
        print(f"  {'app/static/':14} {percent:5.1f}%  {verdict} (lines of {names})")
        if percent < FAIL_UNDER:
            under.append("app/static/")
    if under:
        print(f"coverage gate failed: {', '.join(under)} under {FAIL_UNDER:.0f}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
