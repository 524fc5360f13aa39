"""Registry: unique names held while an actor lives, released when it exits for good."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime import ChildSpec, ChildStartError, ExitKind, Registry, Restart, open_supervisor
from tests.runtime.helpers import Journal, Probe, probe_spec


async def test_workers_register_under_their_path_or_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A worker's name is spec.name if given, else its path in the tree."""
    specs = [probe_spec("a", Journal()), ChildSpec("b", Probe, name="persister")]
    async with open_supervisor(specs) as sup:
        assert sup.registry.names() == ["root/a", "persister"]
        ref = sup.registry.whereis("persister")
        assert ref is not None and await ref.call(("add", 2)) == 2


async def test_name_survives_restarts(autojump_clock: trio.testing.MockClock) -> None:
    """While the actor restarts its name stays registered."""
    async with open_supervisor([probe_spec("a", Journal())]) as sup:
        sup.ref("a").cast_nowait(("exit", ExitKind.CRASH))
        assert "root/a" in sup.registry
        await trio.testing.wait_all_tasks_blocked()
        assert "root/a" in sup.registry


@pytest.mark.parametrize(
    ("restart", "exit_kind"),
    [(Restart.TEMPORARY, ExitKind.CRASH), (Restart.TRANSIENT, ExitKind.NORMAL)],
)
async def test_name_released_when_the_actor_exits_for_good(
    autojump_clock: trio.testing.MockClock, restart: Restart, exit_kind: ExitKind
) -> None:
    """An actor its supervisor will not restart loses its name."""
    async with open_supervisor([probe_spec("a", Journal(), restart)]) as sup:
        sup.ref("a").cast_nowait(("exit", exit_kind))
        await trio.testing.wait_all_tasks_blocked()
        assert sup.registry.whereis("root/a") is None
        assert len(sup.registry) == 0


async def test_names_released_when_the_tree_stops(autojump_clock: trio.testing.MockClock) -> None:
    """A stopped supervisor leaves no names behind in a shared registry."""
    registry = Registry()
    async with open_supervisor([probe_spec("a", Journal())], registry=registry):
        assert registry.names() == ["root/a"]
    assert registry.names() == []


async def test_duplicate_name_fails_the_second_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two actors cannot hold one name: the second fails to start with NameTaken."""
    specs = [ChildSpec("a", Probe, name="same"), ChildSpec("b", Probe, name="same")]
    with pytest.raises(ChildStartError) as info:
        async with open_supervisor(specs):
            pass
    assert type(info.value.reason.error).__name__ == "NameTaken"


def test_refs_compare_by_registry_and_name() -> None:
    """Refs are values: equal when they name the same actor in the same registry."""
    one, two = Registry(), Registry()
    assert one.ref("x") == one.ref("x")
    assert one.ref("x") != two.ref("x")
    assert len({one.ref("x"), one.ref("x"), one.ref("y")}) == 2
