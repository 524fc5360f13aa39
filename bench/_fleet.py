"""A fleet of ``baileys-trio fleet`` processes on one sandbox, driven from outside.

Shared by the fleet bench (bench/fleet.py) and its test (tests/session/
test_fleet_processes.py): it starts the processes (JSON event lines on stdout, logs
to a file each), has the sandbox's phone scan every account's QR, follows which
process has which account open, and samples the sandbox's connections every 20 ms
for a device logged in twice.

``WriteAudit`` checks fencing from the database itself: triggers record every lease
takeover (the account's sequence number it saw) and every commit (the sequence it
wrote on), each with the PostgreSQL ``application_name`` of the process that sent it
(each process runs with ``PGAPPNAME`` set to its name). A write belongs to the owner
of the newest takeover that saw a sequence number at or below the one the write
started from; a write by anyone else landed after its process was taken over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import trio

from sandbox.core import ConnState
from sandbox.errors import SandboxError
from sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Member:
    """One fleet process and what its event lines said so far."""

    name: str
    process: trio.Process
    lines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    open: set[str] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)

    def events(self, name: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [line for t, line in self.lines if line.get("event") == name and t >= since]


class FleetDriver:
    """The processes, the sandbox's phone scanning their QRs, and the sampler's findings."""

    def __init__(
        self, sb: Sandbox, dsn: str, logs: Path, *, ttl: float, capacity: int = 1000
    ) -> None:
        self.sb, self.dsn, self.logs = sb, dsn, logs
        self.ttl, self.capacity = ttl, capacity
        self.members: dict[str, Member] = {}
        self.jid_of: dict[str, str] = {}
        self.scanning: set[str] = set()
        self.twice: list[tuple[float, str]] = []
        self.samples = 0
        self.changed = trio.Event()

    async def start(self, name: str, nursery: trio.Nursery) -> Member:
        argv = [
            sys.executable,
            "-m",
            "runtime",
            "--log-format",
            "json",
            "fleet",
            "--dsn",
            self.dsn,
            "--capacity",
            str(self.capacity),
            "--lease-ttl",
            str(self.ttl),
            "--url",
            self.sb.url,
            "--server-root-key",
            self.sb.root_public_key.hex(),
        ]
        with (self.logs / f"{name}.stderr").open("wb") as err:
            process = await trio.lowlevel.open_process(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env={**os.environ, "PGAPPNAME": name},  # names its writes (WriteAudit)
            )
        member = self.members[name] = Member(name, process)
        nursery.start_soon(self._read, member, nursery)
        return member

    async def _read(self, member: Member, nursery: trio.Nursery) -> None:
        assert member.process.stdout is not None
        buffer = b""
        async for chunk in member.process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = json.loads(raw)
                member.lines.append((trio.current_time(), line))
                self._apply(member, line, nursery)
            self._bump()

    def _apply(self, member: Member, line: dict[str, Any], nursery: trio.Nursery) -> None:
        event, account = line.get("event"), line.get("account")
        if event == "qr" and account not in self.scanning and account not in self.jid_of:
            self.scanning.add(account)
            nursery.start_soon(self._scan, account, line["qr"])
        elif event == "connection_update" and line.get("connection") == "open":
            member.open.add(account)
            self.jid_of[account] = line["me"]
        elif event == "connection_update" and line.get("connection") == "close":
            member.open.discard(account)
        elif event == "session_ended":
            member.open.discard(account)
        elif event == "creds_update":
            member.versions[account] = max(member.versions.get(account, 0), line["version"])

    async def _scan(self, account: str, qr: str) -> None:
        """Scan one QR; the account's next QR (rotated, or shown by another process
        that took the account over mid-pairing) is scanned again until it opens."""
        try:
            with trio.fail_after(30):
                await self.sb.phone.scan(qr)
        except (SandboxError, trio.TooSlowError):
            pass
        finally:
            self.scanning.discard(account)

    def _bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, what: str, condition: Any, bound: float) -> float:
        """Wait (at most ``bound`` s) until ``condition()``; the time it took."""
        start = trio.current_time()
        with trio.move_on_after(bound):
            while not condition():
                with trio.move_on_after(0.1):
                    await self.changed.wait()
            return trio.current_time() - start
        raise AssertionError(f"not within {bound} s: {what}; {self.describe()}")

    def describe(self) -> str:
        """Each process: accounts open, claimed and released so far, QRs shown, exit code."""
        return (
            "; ".join(
                f"{m.name}: {len(m.open)} open, "
                f"{len(m.events('fleet_claimed')) + len(m.events('fleet_takeover'))} claimed, "
                f"released {dict(Counter(e['reason'] for e in m.events('fleet_released')))}, "
                f"{len(m.events('qr'))} QRs, "
                f"exit {m.process.returncode}"
                for m in self.members.values()
            )
            + f"; {len(self.scanning)} QR scans in flight"
        )

    async def sample(self) -> None:
        """Every 20 ms: a device logged in on two connections at once is recorded."""
        while True:
            logged_in = Counter(
                c.jid for c in self.sb.connections() if c.state is ConnState.LOGGED_IN
            )
            self.twice += [(trio.current_time(), j) for j, n in logged_in.items() if n > 1]
            self.samples += 1
            await trio.sleep(0.02)

    async def wait_members(self, count: int, bound: float = 60.0) -> None:
        """Wait until ``count`` processes joined the fleet (live rows in its members table)."""

        def live() -> int:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                found = conn.execute("SELECT to_regclass('baileys_fleet_members')").fetchone()
                if found is None or found[0] is None:
                    return 0  # no process got as far as creating the tables
                row = conn.execute(
                    "SELECT count(*) FROM baileys_fleet_members WHERE expires_at > now()"
                ).fetchone()
                return 0 if row is None else int(row[0])

        with trio.fail_after(bound):
            while await trio.to_thread.run_sync(live) < count:
                with trio.move_on_after(0.1):
                    await self.changed.wait()

    def open_accounts(self) -> set[str]:
        """Accounts open in some live process, as their event lines say."""
        return set().union(*(m.open for m in self.members.values()))

    def logged_in(self) -> set[str]:
        return {c.jid for c in self.sb.connections() if c.state is ConnState.LOGGED_IN and c.jid}


_AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS fence_audit (
    n bigserial PRIMARY KEY,
    account text NOT NULL,
    kind text NOT NULL,
    process text NOT NULL,
    epoch bigint,
    seq bigint NOT NULL
);
CREATE OR REPLACE FUNCTION fence_audit_takeover() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Runs while the takeover holds the lease row FOR UPDATE, so no fenced commit of
    -- the account is between this read of its sequence number and the takeover's end.
    INSERT INTO fence_audit (account, kind, process, epoch, seq)
    SELECT NEW.account, 'takeover', current_setting('application_name'), NEW.epoch, a.seq
    FROM baileys_accounts a WHERE a.account = NEW.account;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION fence_audit_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fence_audit (account, kind, process, seq)
    VALUES (NEW.account, 'write', current_setting('application_name'), OLD.seq);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER fence_audit_takeover AFTER UPDATE OF epoch ON baileys_leases
    FOR EACH ROW WHEN (NEW.epoch <> OLD.epoch) EXECUTE FUNCTION fence_audit_takeover();
CREATE OR REPLACE TRIGGER fence_audit_write AFTER UPDATE OF seq ON baileys_accounts
    FOR EACH ROW WHEN (NEW.seq <> OLD.seq) EXECUTE FUNCTION fence_audit_write();
"""


@dataclass(frozen=True)
class Audited:
    """One audited row: a takeover (at the sequence it saw) or a write (on the one it found)."""

    n: int
    account: str
    kind: str
    process: str
    epoch: int | None
    seq: int


@dataclass(frozen=True)
class StaleWrite:
    """A write that landed after its process lost the account to ``owner``."""

    write: Audited
    owner: Audited | None
    """The takeover the write came after (None: it came before any owner took it)."""


class WriteAudit:
    """Every takeover and commit of the fleet's database, recorded by triggers.

    Install once the tables exist (after the first process joined) and before any
    account is added. Takeovers are lease updates that move the epoch (a fleet claim,
    an open taking the lease); writes are commits moving the account's sequence.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def install(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(_AUDIT_SQL)

    def rows(self) -> list[Audited]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            found = conn.execute(
                "SELECT n, account, kind, process, epoch, seq FROM fence_audit ORDER BY n"
            ).fetchall()
        return [Audited(*row) for row in found]

    def stale_writes(self) -> list[StaleWrite]:
        """Writes made by a process other than the owner of the account at that point.

        A takeover that saw sequence S comes after every write that made S (they had
        committed) and before every write starting from S or later (the commit
        statement's compare-and-set ran on what the takeover saw, or later). Sequence
        numbers only grow, so ordering by them is the order PostgreSQL applied them.
        """
        found: list[StaleWrite] = []
        by_account: dict[str, list[Audited]] = {}
        for row in self.rows():
            by_account.setdefault(row.account, []).append(row)
        for rows in by_account.values():
            ordered = sorted(rows, key=lambda r: (r.seq, r.kind != "takeover", r.n))
            owner: Audited | None = None
            for row in ordered:
                if row.kind == "takeover":
                    owner = row
                elif owner is None or row.process != owner.process:
                    found.append(StaleWrite(row, owner))
        return found
