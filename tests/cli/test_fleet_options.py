"""`baileys-trio fleet` takes run's key, server, pairing and metrics options, none silently."""

from __future__ import annotations

from actors.cli import server_options
from runtime.cli import build_parser
from tests.cli.test_fleet_add import run_cli

DSN = "postgresql://bots@127.0.0.1:1/bots"


def test_metrics_and_pairing_options_reach_the_config_fields() -> None:
    for command in ("run --auth a", "fleet --dsn x --capacity 1"):
        args = build_parser().parse_args(
            [*command.split(), "--metrics-port", "0", "--pairing-phone", "+15551234567"]
        )
        assert server_options(args) == {
            "metrics_port": 0,
            "metrics_host": "127.0.0.1",
            "pairing_phone": "+15551234567",
        }


def test_a_pairing_phone_for_the_whole_fleet_is_refused_naming_the_field() -> None:
    done = run_cli("fleet", "--dsn", DSN, "--capacity", "2", "--pairing-phone", "15551234567")
    assert done.code == 2
    assert "Config.pairing_phone" in done.err and "account_config" in done.err


def test_a_key_reference_that_does_not_resolve_stops_the_fleet_before_it_joins() -> None:
    done = run_cli("fleet", "--dsn", DSN, "--capacity", "2", "--key", "env:BT_NO_SUCH_KEY")
    assert done.code == 2
    assert "BT_NO_SUCH_KEY" in done.err and "cannot join" not in done.err
