"""The fuzz runner (bench/fuzz.py): it runs every target and catches each kind of violation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench import fuzz
from bench.fuzz_targets import TARGETS, Target


def _target(run: object, **kwargs: object) -> Target:
    base = dict(
        name="fake",
        run=run,
        allowed=(ValueError,),
        seeds=lambda: [b"seed-1", b"seed-22"],
        huge_lengths=lambda: [b"\xff\xff\xff\xff"],
        doc="a fake target",
    )
    base.update(kwargs)
    return Target(**base)  # type: ignore[arg-type]  # test doubles built from a dict


def is_known_buffer_json_bug(violation: fuzz.Violation) -> bool:
    """The two stores/buffer_json.py bugs pinned by strict xfails in property_tests."""
    last = violation.detail.strip().splitlines()[-1] if violation.detail else ""
    return (
        violation.kind == "untyped"
        and "stores/buffer_json.py" in violation.detail
        and last.startswith(("RecursionError", "ValueError"))
    )


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_runs_a_short_soak_without_violations(name: str, tmp_path: Path) -> None:
    """Each real target takes 150 mutated inputs with no violation but the known ones."""
    report = fuzz.fuzz_target(TARGETS[name], inputs=150, seconds=None, results=tmp_path, quiet=True)
    assert report.inputs == 150
    assert report.accepted + sum(report.errors.values()) + len(report.violations) == 150
    assert report.memory_checks >= len(TARGETS[name].huge_lengths())
    unknown = [v for v in report.violations if not is_known_buffer_json_bug(v)]
    assert unknown == []
    assert len(list(tmp_path.iterdir())) == len(report.reproducers)


def test_an_untyped_error_is_a_violation_with_a_reproducer(tmp_path: Path) -> None:
    """A KeyError escaping the target is reported once per bug and its input saved to disk."""

    def run(data: bytes) -> None:
        if len(data) % 3 == 0:
            raise KeyError("boom")
        if len(data) % 3 == 1:
            raise ValueError("typed")

    report = fuzz.fuzz_target(_target(run), inputs=200, seconds=None, results=tmp_path, quiet=True)
    assert report.violations and {v.kind for v in report.violations} == {"untyped"}
    assert len(report.reproducers) == 1
    saved = Path(report.reproducers[0]).read_bytes()
    assert len(saved) % 3 == 0
    assert sum(report.errors.values()) > 0


def test_an_assertion_in_a_target_is_an_oracle_violation(tmp_path: Path) -> None:
    """A target's own consistency check failing is reported as an oracle violation."""

    def run(data: bytes) -> None:
        assert data != b"seed-1", "wrong answer"

    report = fuzz.fuzz_target(_target(run), inputs=5, seconds=None, results=tmp_path, quiet=True)
    assert [v.kind for v in report.violations][:1] == ["oracle"]


def test_an_input_past_the_time_bound_is_a_hang(tmp_path: Path) -> None:
    """An input that never returns is interrupted at the bound and reported as a hang."""

    def run(data: bytes) -> None:
        if data == b"seed-22":
            while True:
                pass

    report = fuzz.fuzz_target(
        _target(run), inputs=2, seconds=None, bound=0.05, results=tmp_path, quiet=True
    )
    assert [v.kind for v in report.violations] == ["hang"]
    assert Path(report.reproducers[0]).read_bytes() == b"seed-22"


def test_allocating_beyond_the_bound_is_a_memory_violation(tmp_path: Path) -> None:
    """A crafted input whose run allocates far more than its bound is a memory violation."""

    def run(data: bytes) -> None:
        if data.startswith(b"\xff"):
            bytearray(8 << 20)

    report = fuzz.fuzz_target(_target(run), inputs=3, seconds=None, results=tmp_path, quiet=True)
    assert [v.kind for v in report.violations] == ["memory"]


def test_the_mutator_is_reproducible_and_applies_the_fixup() -> None:
    """The same seed gives the same inputs; the fixup runs on the mutated bytes."""
    seeds = [bytes(range(40)), b"abc" * 10]
    first = fuzz.Mutator(seeds, random.Random(7))
    second = fuzz.Mutator(seeds, random.Random(7))
    assert [first.next() for _ in range(200)] == [second.next() for _ in range(200)]
    tagged = fuzz.Mutator(seeds, random.Random(1), fixup=lambda d: b"FIX" + d)
    outputs = [tagged.next() for _ in range(400)]
    assert any(o.startswith(b"FIX") for o in outputs)
    assert any(o not in seeds for o in outputs)


def test_error_kinds_blur_offsets_and_values() -> None:
    """Two errors differing only in offsets and quoted values have the same kind."""
    a = fuzz.error_kind(ValueError("bad byte 'x' at offset 12 (4f2a)"))
    b = fuzz.error_kind(ValueError("bad byte 'yy' at offset 9 (ff00)"))
    assert a == b and a.startswith("ValueError: ")


def test_main_is_the_short_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() runs every target with the small budget and says whether atheris is there."""
    seen: dict[str, object] = {}

    def fake_run(names: list[str], **kwargs: object) -> dict[str, object]:
        seen.update(kwargs, names=names)
        return {}

    monkeypatch.setattr(fuzz, "run", fake_run)
    fuzz.main()
    assert seen["names"] == list(TARGETS)
    assert seen["inputs"] == 3_000 and seen["seconds"] == 3.0 and seen["use_atheris"] is True


def test_reproduce_runs_one_saved_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--reproduce runs a saved file through its target and reports the outcome."""
    path = tmp_path / "input.bin"
    path.write_bytes(TARGETS["binary"].seeds()[0])
    assert fuzz.cli(["--target", "binary", "--reproduce", str(path)]) == 0
    assert "ok: accepted" in capsys.readouterr().out
