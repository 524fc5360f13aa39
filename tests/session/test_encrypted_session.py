"""A session on an encrypted auth location: `Config(encryption_key=...)` end to end.

Disk backends run on the real clock (their fsyncs run in worker threads).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from actors.errors import ConfigError
from runtime.app import AuthLocation, Config, open_runtime
from stores.auth import use_memory_auth_state, use_native_file_auth_state
from stores.encryption import StoreKey
from stores.errors import WrongKeyError
from tests.session.helpers import Recorder, sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox
from tests.stores.encryption_helpers import creds_secrets, scan_for_leaks


@pytest.mark.parametrize("backend", ["native", "sqlite"])
async def test_session_pairs_and_restarts_on_an_encrypted_location(
    tmp_path: Path, backend: str
) -> None:
    """Pair, stop, restart without QR under the key; no private key reaches any file."""
    path = tmp_path / ("auth.db" if backend == "sqlite" else "auth")
    key = secrets.token_bytes(32)
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        config = sandbox_config(
            sb, path, backend=backend, encryption_key=key, on_qr=scanning_phone(sb, nursery)
        )
        async with open_runtime(config) as rt:
            await rt.wait_connected(timeout=120)
            creds = await rt.auth_state()
        again = Recorder()
        restart = sandbox_config(sb, path, backend=backend, encryption_key=lambda: key)
        async with open_runtime(restart, subscribe=again) as rt:
            await rt.wait_connected(timeout=60)
            assert (await rt.auth_state()).me == creds.me
        assert again.connection("qr") == []
        nursery.cancel_scope.cancel()
    async with await AuthLocation(path, backend, encryption_key=key).open() as auth:
        pre_keys = await auth.state.keys.get("pre-key", ["1", "812"])
    assert len(pre_keys) == 2
    known = [s for s in creds_secrets(creds) if s]
    known += [pair["private"] for pair in pre_keys.values()]
    assert scan_for_leaks(tmp_path, known) == []
    with pytest.raises(WrongKeyError):
        async with open_runtime(sandbox_config(sb, path, backend=backend)):
            pass


def test_config_passes_the_key_into_the_location_and_refuses_what_cannot_hold_it(
    tmp_path: Path,
) -> None:
    """The key reaches the AuthLocation; multi-file, an open PersistedAuth, a short key: no."""
    key = StoreKey.generate()
    config = Config(auth=tmp_path / "auth", encryption_key=key)
    assert isinstance(config.auth, AuthLocation) and config.auth.encryption_key is key
    assert key._raw.hex() not in repr(config) and "StoreKey" not in repr(config)
    located = Config(auth=AuthLocation(tmp_path / "db", "sqlite"), encryption_key=key)
    assert isinstance(located.auth, AuthLocation) and located.auth.encryption_key is key
    with pytest.raises(ConfigError, match="encryption_key"):
        Config(auth=tmp_path / "b", backend="multi-file", encryption_key=key)
    with pytest.raises(ConfigError, match="32 bytes"):
        Config(auth=tmp_path / "auth", encryption_key=b"short")
    with pytest.raises(ConfigError, match="twice"):
        Config(
            auth=AuthLocation(tmp_path / "a", encryption_key=StoreKey.generate()),
            encryption_key=key,
        )


async def test_config_refuses_a_key_for_an_already_open_auth(tmp_path: Path) -> None:
    """A PersistedAuth was opened (and keyed, or not) already: a key beside it is refused."""
    async with await use_memory_auth_state() as auth:
        with pytest.raises(ConfigError, match="PersistedAuth"):
            Config(auth=auth, encryption_key=StoreKey.generate())
    async with await use_native_file_auth_state(
        tmp_path / "auth", encryption_key=StoreKey.generate()
    ) as auth:
        assert Config(auth=auth).auth is auth
