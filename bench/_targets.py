"""Figures with a target, gathered from every benchmark of one run and printed together.

A benchmark's ``main()`` returns ``{"verdicts": [Verdict(...).as_dict(), ...], ...}``
beside its own figures; ``python -m bench`` prints them all at the end of the run,
so one ``make bench`` shows every target with ``met`` / ``NOT MET`` and, for a
figure that is not met, the limit measured in that same run which explains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """One figure of one run beside its target."""

    figure: str
    value: str
    """As printed: the figure with its unit (``"0.84x raw fsync"``, ``"142 KiB"``)."""
    target: str
    met: bool
    limit: str = ""
    """For a figure not met: the limit measured in the same run that bounds it."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather(results: Mapping[str, Any]) -> list[tuple[str, Verdict]]:
    """Every verdict in a run's results, with the benchmark that printed it."""
    out = []
    for name, result in results.items():
        if not isinstance(result, Mapping):
            continue
        for raw in result.get("verdicts", ()):
            out.append((name, Verdict(**raw)))
    return out


def print_summary(verdicts: Sequence[tuple[str, Verdict]]) -> None:
    """The closing table of ``python -m bench``: each target, met or not, and why not."""
    if not verdicts:
        return
    met = sum(v.met for _, v in verdicts)
    print(f"\n=== targets in this run: {met} of {len(verdicts)} met ===")
    for name, v in verdicts:
        status = "met" if v.met else "NOT MET"
        print(f"  {name:<9} {v.figure:<46} {v.value:>22}  {v.target:<22} {status}")
        if v.limit and not v.met:
            print(f"  {'':<9}   limit: {v.limit}")
