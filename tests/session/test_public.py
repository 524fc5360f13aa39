"""Public surface: names exist, Config validates every field, entry points behave as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import actors
import runtime.app
from actors.errors import ConfigError
from runtime.app import AuthLocation, Config
from runtime.spec import Backoff

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_of_actors_and_runtime_app_exists():
    """actors.__all__ and runtime.app.__all__ name importable objects."""
    for name in actors.__all__:
        assert getattr(actors, name) is not None
    for name in runtime.app.__all__:
        assert getattr(runtime.app, name) is not None


def test_importing_actors_does_not_load_the_session_tree():
    """`import actors` stays light: the actors themselves load on first use."""
    code = (
        "import sys, actors; print('actors.session' in sys.modules, 'stores.auth' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"auth": 42}, "auth"),
        ({"backend": "csv"}, "backend"),
        ({"account": "a/b"}, "account"),
        ({"ws_url": "http://example.com"}, "ws_url"),
        ({"server_root_key": "zz"}, "server_root_key"),
        ({"server_root_key": b"short"}, "server_root_key"),
        ({"on_qr": "print"}, "on_qr"),
        ({"version": (2, 3000)}, "version"),
        ({"keepalive_interval": 0}, "keepalive_interval"),
        ({"keepalive_interval": float("nan")}, "keepalive_interval"),
        ({"qr_timeout": -1}, "qr_timeout"),
        ({"connect_timeout": "20"}, "connect_timeout"),
        ({"query_timeout": float("inf")}, "query_timeout"),
        ({"reconnect": 5}, "reconnect"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"restart_backoff": 1.0}, "restart_backoff"),
        ({"signal_store": "mine"}, "signal_store"),
        ({"signal_store_options": []}, "signal_store_options"),
        ({"cache_size": -5}, "cache_size"),
        ({"creds_coalesce_delay": -1}, "creds_coalesce_delay"),
        ({"store_timeout": 0}, "store_timeout"),
        ({"transport": object()}, "transport"),
    ],
)
def test_invalid_config_fails_at_construction_naming_the_field(overrides, field):
    """Each invalid value raises ConfigError whose field and message name the field."""
    values = {"auth": "./auth", **overrides}
    with pytest.raises(ConfigError) as caught:
        Config(**values)
    assert caught.value.field == field
    assert f"Config.{field}" in str(caught.value)


def test_invalid_auth_location_names_its_field():
    """AuthLocation checks its backend and account."""
    with pytest.raises(ConfigError, match=r"auth\.backend"):
        AuthLocation("./x", "json")
    with pytest.raises(ConfigError, match=r"auth\.account"):
        AuthLocation("./x", "sqlite", "")


def test_a_path_becomes_an_auth_location_and_the_account_name_follows_sqlite():
    """auth=path + backend → AuthLocation; the session name defaults to the sqlite account."""
    config = Config(auth="./bots.db", backend="sqlite", account=None)
    assert config.auth == AuthLocation("./bots.db", "sqlite", "default")
    assert Config(auth=AuthLocation("./b.db", "sqlite", "alice")).account_name == "alice"
    assert Config(auth="./auth").account_name == "default"
    assert Config(auth="./auth", reconnect=Backoff(2.0, 2.0, 4.0)).reconnect.max_delay == 4.0


def test_run_command_help_lists_every_option_and_bad_arguments_exit_2():
    """`python -m actors.cli run --help` documents the options; a bad one exits 2."""
    help_text = subprocess.run(
        [sys.executable, "-m", "actors.cli", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--auth", "--backend", "--account", "--url", "--server-root-key"):
        assert option in help_text
    bad = subprocess.run(
        [sys.executable, "-m", "actors.cli", "run", "--auth", "x", "--backend", "csv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    bad_key = subprocess.run(
        [
            sys.executable,
            "-m",
            "actors.cli",
            "run",
            "--auth",
            "x",
            "--server-root-key",
            "zz",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad_key.returncode == 2 and "server_root_key" in bad_key.stderr


def test_console_printer_draws_the_qr_and_hides_creds_values():
    """Console output shows the QR string (and a drawing); creds updates show names only."""
    import io

    from actors.cli import event_printer

    out = io.StringIO()
    printer = event_printer("console", out)
    qr = "https://wa.me/settings/linked_devices#ref,bm9pc2U=,aWQ=,YWR2,1"
    printer({"connection_update": {"connection": "connecting", "qr": qr, "qr_index": 0}})
    printer({"creds_update": {"version": 3, "changed": ["me"], "delta": {"me": {"id": "x"}}}})
    text = out.getvalue()
    assert qr in text and "scan this QR" in text
    assert "creds_update: version=3 changed=['me']" in text and "'id'" not in text


def test_console_printer_says_why_a_connection_closed_and_what_happens_next():
    """A close reads as its reason and cause, then the reconnect delay or that it stops."""
    import io

    from actors.cli import event_printer

    out = io.StringIO()
    printer = event_printer("console", out)
    detail = "wss://web.whatsapp.com/ws/chat: HandshakeError <- gaierror: [Errno -2] Name unknown"
    printer(
        {
            "connection_update": {
                "connection": "close",
                "reason": "connection_closed",
                "code": 428,
                "detail": detail,
                "reconnect": True,
                "delay": 1.234,
            }
        }
    )
    printer({"connection_update": {"connection": "close", "reason": "logged_out", "code": 401}})
    lines = out.getvalue().splitlines()
    assert lines == [
        f"connection closed (428 connection_closed): {detail}; reconnecting in 1.2 s",
        "connection closed (401 logged_out); not reconnecting",
    ]


def test_json_printer_writes_one_object_per_event_and_never_creds_values():
    """JSON lines: qr as its own event; creds_update without the delta."""
    import io

    from actors.cli import event_printer

    out = io.StringIO()
    printer = event_printer("json", out)
    printer({"connection_update": {"qr": "QR", "qr_index": 1, "account": "a"}})
    printer({"connection_update": {"connection": "open", "me": "1:2@s.whatsapp.net"}})
    printer({"creds_update": {"version": 9, "changed": ["routing_info"], "delta": {"x": b"k"}}})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"event": "qr", "qr": "QR", "qr_index": 1, "account": "a"},
        {"event": "connection_update", "connection": "open", "me": "1:2@s.whatsapp.net"},
        {"event": "creds_update", "version": 9, "changed": ["routing_info"]},
    ]


def test_run_on_a_corrupt_auth_location_exits_1_naming_the_file_and_keeps_it(tmp_path):
    """A torn creds.json is never a new device: exit 1, the error names it, the file stays."""
    auth = tmp_path / "auth"
    auth.mkdir(mode=0o700)
    creds = auth / "creds.json"
    creds.write_text('{"noiseKey": {"private": ')
    creds.chmod(0o600)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "actors.cli",
            "run",
            "--auth",
            str(auth),
            "--backend",
            "multi-file",
            "--url",
            "ws://127.0.0.1:9/ws/chat",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "creds.json" in result.stderr
    assert creds.read_text() == '{"noiseKey": {"private": '


def test_run_command_registers_into_the_full_cli_beside_the_others():
    """runtime.cli's parser has `run` (from actors.cli.cli_commands) with every option."""
    from runtime.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["run", "--auth", "a", "--backend", "sqlite", "--account", "al", "--log-format", "json"]
    )
    assert (args.auth, args.backend, args.account, args.log_format) == ("a", "sqlite", "al", "json")
