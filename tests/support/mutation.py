"""`python -m tests.support.mutation`: the mutation score per module from mutmut's results
(`mutants/**/*.meta`, written by `make mutation`), as a Markdown table.

Killed counts mutants the tests failed on (or timed out on: a mutant that hangs is caught).
Survived and "no tests" count against the score, which is over the mutants run so far;
equivalent mutants are listed, with the reason, in tests/MUTATION.md and not subtracted here.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}


def scores(root: Path = Path("mutants")) -> dict[str, Counter[str]]:
    by_module: dict[str, Counter[str]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        module = str(meta.relative_to(root)).removesuffix(".meta")
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if codes:
            by_module[module] = Counter(status_by_exit_code[code] for code in codes.values())
    return by_module


def table(by_module: dict[str, Counter[str]]) -> str:
    lines = ["| module | mutants | killed | survived | no tests | not run yet | score |",
             "|---|---|---|---|---|---|---|"]
    totals: Counter[str] = Counter()
    for module, counts in by_module.items():
        totals += counts
        lines.append(_row(module, counts))
    lines.append(_row("**all**", totals))
    return "\n".join(lines)


def _row(name: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    caught = sum(counts[s] for s in CAUGHT)
    checked = total - counts["not checked"]
    return (f"| {name} | {total} | {caught} | {counts['survived']} | {counts['no tests']} | "
            f"{counts['not checked']} | {caught / max(checked, 1):.1%} |")


if __name__ == "__main__":
    found = scores()
    if not found:
        sys.exit("no mutmut results under mutants/: run `make mutation` first")
    print(table(found))
