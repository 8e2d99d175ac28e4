"""The alarm journal: episodes, acknowledgements and shelves in an embedded SQLite database
(`ANOMALY_ALARM_DB`), so a restart or a reload loses no episode and no acknowledgement, and several
service processes on one host can share the alarms of a fleet (docs/serving.md, "More than one process").

What is written, and when: an episode when it opens, is acknowledged and closes (its reading count and
peak as they stand then); a shelve when it is set. Every `JOURNAL_SYNC_S` the process also writes the state
of the assets it holds (their `GET /v1/assets` entry, latest reading time and count, and their open
episodes' counts), so a crash loses at most that interval's counts, and the other processes can list them.
What is not kept: the temporal evidence (the rule's window of the last n readings), which rebuilds from an
asset's next n readings; an episode open at a restart stays open and closes by the rule as before.

Sharing (schema 3): `assets` names the process holding each asset (`holder`, a token per process start)
and numbers every change another process must see (`seq`: a hand-over, an acknowledgement or a shelve made
through a process that does not hold the asset); `processes` holds each live process's lease. A process
takes an asset over when one of its readings arrives there, and adopts an asset with an alarm whose holder
stopped (released at a clean stop, or its lease run out).

Several processes on one host: WAL mode (readers never block the writer nor it them; the WAL index lives in
shared memory, which is why every process must be on the same host, and why the file must not be on a
network file system), a busy timeout (a writer waits for another's transaction instead of failing), and
every read-then-write in one `BEGIN IMMEDIATE` transaction (a deferred one could not be upgraded to a
write once another process has written: SQLITE_BUSY without waiting).

Schema migrations are numbered (`MIGRATIONS`, `PRAGMA user_version`), applied in one transaction that
reads the version under the write lock (two processes starting on a new file migrate it once); a database
from a newer version of the service is refused rather than misread. Standard library only; one connection,
used under the asset book's lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_anomaly.alarms.lifecycle import Episode

BUSY_TIMEOUT_S = 5.0  # how long a write waits for another process's transaction before failing
SQL_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's bound on parameters

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE episodes (
        id TEXT PRIMARY KEY, asset TEXT NOT NULL, opened REAL NOT NULL, since REAL NOT NULL,
        evidence TEXT NOT NULL, readings INTEGER NOT NULL, peak_score REAL,
        closed REAL, closed_by TEXT, top_sensors TEXT NOT NULL
    );
    CREATE INDEX episodes_open ON episodes (closed) WHERE closed IS NULL;
    CREATE INDEX episodes_asset ON episodes (asset, opened);
    CREATE TABLE acknowledgements (
        episode_id TEXT NOT NULL REFERENCES episodes (id), at REAL NOT NULL, by TEXT NOT NULL,
        note TEXT NOT NULL
    );
    CREATE TABLE shelves (
        asset TEXT PRIMARY KEY, until REAL NOT NULL, note TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL
    );
    """,
    # 2: the sensor that led an episode when it opened (alert labels)
    "ALTER TABLE episodes ADD COLUMN lead_sensor TEXT",
    # 3: several processes share the journal: who holds each asset, what changed, who is alive
    """
    CREATE TABLE assets (
        asset TEXT PRIMARY KEY, holder TEXT, active REAL NOT NULL, carry TEXT, view TEXT,
        seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX assets_seq ON assets (seq);
    CREATE INDEX assets_active ON assets (active);
    CREATE INDEX acknowledgements_episode ON acknowledgements (episode_id);
    CREATE TABLE processes (token TEXT PRIMARY KEY, expires REAL NOT NULL);
    INSERT OR IGNORE INTO assets (asset, active) SELECT asset, MAX(opened) FROM episodes GROUP BY asset;
    INSERT OR IGNORE INTO assets (asset, active) SELECT asset, at FROM shelves
    """,
)

_EPISODE_COLUMNS = (
    "id, asset, opened, since, evidence, readings, peak_score, closed, closed_by, top_sensors, lead_sensor"
)
_LIVE = "SELECT token FROM processes WHERE expires > ?"
_HAS_ALARM = (
    "(EXISTS (SELECT 1 FROM episodes e WHERE e.asset = a.asset AND e.closed IS NULL) "
    "OR EXISTS (SELECT 1 FROM shelves s WHERE s.asset = a.asset AND s.until > ?))"
)


class JournalError(RuntimeError):
    """The journal cannot be opened, read or written (the message names the file and why)."""


@dataclass(frozen=True)
class Shelve:
    until: float
    note: str
    by: str


@dataclass(frozen=True)
class Taken:
    """An asset as the journal holds it, when a process takes it over or adopts it."""

    asset: str
    active: float  # wall time of its last reading anywhere (as last written)
    carry: dict[str, Any]  # what its holder wrote for the next one (`AssetBook`: latest reading, counts)
    episode: Episode | None  # its open episode
    shelve: Shelve | None  # its running shelve


@dataclass(frozen=True)
class Held:
    """What the holder of an asset writes each sync: its state for the others' listings and a hand-over."""

    asset: str
    active: float
    carry: dict[str, Any]
    view: dict[str, Any]
    episode: Episode | None


class AlarmJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._data_version = -1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"alarm journal {path}: {exc}") from exc

    def _migrate(self) -> None:
        with self.transaction():
            found = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if found > len(MIGRATIONS):
                raise JournalError(
                    f"alarm journal {self.path} has schema version {found}; this service knows up to "
                    f"{len(MIGRATIONS)} (a newer service wrote it)"
                )
            for version in range(found, len(MIGRATIONS)):
                # statement by statement: executescript would commit the transaction first
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            if found < len(MIGRATIONS):
                self._db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error); nested uses join the outer one. sqlite3 errors
        become JournalError naming the file."""
        with self._failures():
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """One consistent snapshot for several SELECTs (a deferred transaction), or the caller's."""
        if self._db.in_transaction:
            yield
            return
        with self._failures():
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """sqlite3 errors inside become JournalError naming the file (what the asset book handles)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise JournalError(f"alarm journal {self.path}: {exc}") from exc

    # --- writes of the asset's holder -----------------------------------------------------------------

    def save_episode(self, episode: Episode) -> None:
        """Insert or update an episode's row (open, closed, or its counts as they stand). A closed row
        stays closed: a holder that has not yet seen another process close it cannot reopen it."""
        with self.transaction():
            self._db.execute(
                f"INSERT INTO episodes ({_EPISODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE "
                "SET readings = excluded.readings, peak_score = excluded.peak_score, "
                "closed = COALESCE(episodes.closed, excluded.closed), "
                "closed_by = COALESCE(episodes.closed_by, excluded.closed_by), "
                "top_sensors = excluded.top_sensors",
                (episode.id, episode.asset, episode.opened, episode.since, episode.evidence, episode.readings,
                 _finite(episode.peak_score), episode.closed, episode.closed_by,
                 json.dumps(episode.sensor_sums()), episode.lead_sensor),
            )  # fmt: skip

    def save_acknowledgement(self, episode: Episode, ack: dict[str, Any]) -> None:
        with self.transaction():
            self.save_episode(episode)
            self._insert_ack(episode.id, ack)

    def save_shelve(self, asset: str, until: float, note: str, by: str, at: float) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO shelves (asset, until, note, by, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (asset) DO UPDATE SET until = excluded.until, note = excluded.note, "
                "by = excluded.by, at = excluded.at",
                (asset, until, note, by, at),
            )

    def _insert_ack(self, episode_id: str, ack: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO acknowledgements (episode_id, at, by, note) VALUES (?, ?, ?, ?)",
            (episode_id, ack["at"], ack["by"], ack["note"]),
        )

    # --- holding assets -------------------------------------------------------------------------------

    def take(self, asset: str, holder: str, now: float) -> Taken:
        """Make `holder` the asset's holder (its reading arrived there) and return the asset as the journal
        has it: its open episode continues there instead of a duplicate opening. A previous holder is told
        (the change number moves) and forgets the asset."""
        with self.transaction():
            row = self._db.execute(
                "SELECT holder, active, carry FROM assets WHERE asset = ?", (asset,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO assets (asset, holder, active) VALUES (?, ?, ?)", (asset, holder, now)
                )
                return Taken(asset, now, {}, None, None)
            previous, active, carry = row
            seq = self._next_seq() if previous not in (None, holder) else None
            self._db.execute(
                "UPDATE assets SET holder = ?, seq = COALESCE(?, seq) WHERE asset = ?", (holder, seq, asset)
            )
            return self._taken(asset, active, carry, now)

    def adopt_orphans(self, holder: str, now: float) -> list[Taken]:
        """Take over every asset with an alarm (an open episode or a running shelve) whose holder is gone:
        released at a clean stop, or its lease run out. Most recently active last."""
        with self.transaction():
            rows = self._db.execute(
                "SELECT a.asset, a.active, a.carry FROM assets a "
                f"WHERE (a.holder IS NULL OR a.holder NOT IN ({_LIVE})) AND {_HAS_ALARM} ORDER BY a.active",
                (now, now),
            ).fetchall()
            if not rows:
                return []
            seq = self._next_seq()
            self._db.executemany(
                "UPDATE assets SET holder = ?, seq = ? WHERE asset = ?", [(holder, seq, r[0]) for r in rows]
            )
            return [self._taken(asset, active, carry, now) for asset, active, carry in rows]

    def write_held(self, holder: str, held: Iterable[Held]) -> None:
        """The holder's periodic write of its assets (skipping any another process has taken since)."""
        with self.transaction():
            for entry in held:
                state = (entry.active, json.dumps(entry.carry), json.dumps(entry.view))
                written = self._db.execute(
                    "UPDATE assets SET active = ?, carry = ?, view = ? WHERE asset = ? AND holder = ?",
                    (*state, entry.asset, holder),
                ).rowcount
                if not written:  # no row yet (its take-over could not be written): this holder's now
                    written = self._db.execute(
                        "INSERT OR IGNORE INTO assets (active, carry, view, asset, holder) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (*state, entry.asset, holder),
                    ).rowcount
                if written and entry.episode is not None:
                    self.save_episode(entry.episode)

    def forget(self, asset: str, holder: str) -> None:
        """The holder forgot an idle asset (its TTL): its row goes too, unless another process holds it."""
        with self.transaction():
            self._db.execute("DELETE FROM assets WHERE asset = ? AND holder = ?", (asset, holder))

    def release(self, holder: str) -> None:
        """A clean stop: the holder's assets are free for the others to adopt, its lease ends."""
        with self.transaction():
            self._db.execute("UPDATE assets SET holder = NULL WHERE holder = ?", (holder,))
            self._db.execute("DELETE FROM processes WHERE token = ?", (holder,))

    def heartbeat(self, holder: str, now: float, lease_s: float) -> None:
        """Renew the holder's lease, and forget the leases of processes gone for a day."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO processes (token, expires) VALUES (?, ?) "
                "ON CONFLICT (token) DO UPDATE SET expires = excluded.expires",
                (holder, now + lease_s),
            )
            self._db.execute("DELETE FROM processes WHERE expires < ?", (now - 86_400.0,))

    def prune(self, idle_before: float, now: float) -> None:
        """Forget assets idle since `idle_before` that no live process holds (and so no one will evict)."""
        with self.transaction():
            self._db.execute(
                f"DELETE FROM assets AS a WHERE active < ? AND (holder IS NULL OR holder NOT IN ({_LIVE})) "
                f"AND NOT {_HAS_ALARM}",
                (idle_before, now, now),
            )

    def forget_before(self, before: float) -> int:
        """Delete the episodes closed before `before` with their acknowledgements, and the shelves that
        ended before it (retention: the journal stays bounded). Returns the episodes deleted."""
        with self.transaction():
            old = "SELECT id FROM episodes WHERE closed IS NOT NULL AND closed < ?"
            self._db.execute(f"DELETE FROM acknowledgements WHERE episode_id IN ({old})", (before,))
            deleted = self._db.execute(
                "DELETE FROM episodes WHERE closed IS NOT NULL AND closed < ?", (before,)
            ).rowcount
            self._db.execute("DELETE FROM shelves WHERE until < ?", (before,))
        return int(deleted)

    def _taken(self, asset: str, active: float, carry: str | None, now: float) -> Taken:
        episode, shelve = self._open_episode(asset), self._shelve(asset, now)
        return Taken(asset, float(active), json.loads(carry) if carry else {}, episode, shelve)

    def _next_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM assets").fetchone()[0])

    # --- what other processes changed -----------------------------------------------------------------

    def changed(self) -> bool:
        """Whether another connection committed since the last call (`PRAGMA data_version`: no I/O)."""
        with self._failures():
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
        changed, self._data_version = version != self._data_version, version
        return changed

    def changes(self, after: int) -> list[tuple[str, str | None, int]]:
        """(asset, holder, seq) of every asset whose change number is above `after`, in order."""
        rows = self._query("SELECT asset, holder, seq FROM assets WHERE seq > ? ORDER BY seq", (after,))
        return [(str(asset), holder, int(seq)) for asset, holder, seq in rows]

    def last_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM assets", ())[0][0])

    def alarm_of(self, asset: str, now: float) -> tuple[Episode | None, Shelve | None]:
        """The asset's open episode and running shelve."""
        with self._reading():
            return self._open_episode(asset), self._shelve(asset, now)

    # --- operators' actions through a process that does not hold the asset ----------------------------

    def acknowledge(self, episode_id: str, ack: dict[str, Any]) -> Episode | None:
        """Record an acknowledgement of an episode held elsewhere (or closed), and tell its holder; None if
        the journal has no such episode."""
        with self.transaction():
            found = self._episodes("WHERE id = ?", (episode_id,))
            if not found:
                return None
            self._insert_ack(episode_id, ack)
            self._db.execute("UPDATE assets SET seq = ? WHERE asset = ?", (self._next_seq(), found[0].asset))
            found[0].acknowledgements.append(dict(ack))
            return found[0]

    def shelve_elsewhere(
        self,
        asset: str,
        shelve: Shelve,
        at: float,
        view: Callable[[dict[str, Any] | None], dict[str, Any]],
    ) -> dict[str, Any] | None:
        """Shelve an asset held elsewhere (or by no one): its open episode closes (by "shelved"), the
        shelve is recorded, the holder is told, and its listed state becomes `view(stored view)`, which is
        returned. None if the journal does not know the asset."""
        with self.transaction():
            row = self._db.execute("SELECT view FROM assets WHERE asset = ?", (asset,)).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE episodes SET closed = ?, closed_by = 'shelved' WHERE asset = ? AND closed IS NULL",
                (at, asset),
            )
            self.save_shelve(asset, shelve.until, shelve.note, shelve.by, at)
            listed = view(json.loads(row[0]) if row[0] else None)
            self._db.execute(
                "UPDATE assets SET view = ?, seq = ? WHERE asset = ?",
                (json.dumps(listed), self._next_seq(), asset),
            )
            return listed

    # --- reads ----------------------------------------------------------------------------------------

    def open_episodes(self) -> list[Episode]:
        return self._episodes("WHERE closed IS NULL ORDER BY opened", ())

    def closed_episodes(self, limit: int) -> list[Episode]:
        """The `limit` most recently opened closed episodes, oldest first."""
        found = self._episodes("WHERE closed IS NOT NULL ORDER BY opened DESC LIMIT ?", (limit,))
        return found[::-1]

    def episodes(self, state: str, asset: str | None, since: float | None, limit: int) -> list[Episode]:
        """Episodes for a listing: "open", "closed" (the `limit` most recently opened) or "all"."""
        where = ""
        args: list[Any] = []
        if asset is not None:
            where += " AND asset = ?"
            args.append(asset)
        if since is not None:
            where += " AND opened >= ?"
            args.append(since)
        found: list[Episode] = []
        with self._reading():
            if state in ("open", "all"):
                found += self._episodes(f"WHERE closed IS NULL{where}", tuple(args))
            if state in ("closed", "all"):
                found += self._episodes(
                    f"WHERE closed IS NOT NULL{where} ORDER BY opened DESC LIMIT ?", (*args, limit)
                )
        return found

    def episode(self, episode_id: str) -> Episode | None:
        found = self._episodes("WHERE id = ?", (episode_id,))
        return found[0] if found else None

    def shelves(self, now: float) -> list[tuple[str, float, str, str]]:
        """(asset, until, note, by) of every shelve still running at `now`."""
        rows = self._query("SELECT asset, until, note, by FROM shelves WHERE until > ?", (now,))
        return [(str(a), float(u), str(n), str(b)) for a, u, n, b in rows]

    def asset_views(self, active_since: float, limit: int) -> list[tuple[str, float, dict[str, Any]]]:
        """(asset, active, view) of the assets active since `active_since`, as their holders last wrote
        them, most recently active first."""
        rows = self._query(
            "SELECT asset, active, view FROM assets WHERE view IS NOT NULL AND active >= ? "
            "ORDER BY active DESC LIMIT ?",
            (active_since, limit),
        )
        return [(str(asset), float(active), json.loads(view)) for asset, active, view in rows]

    def asset_view(self, asset: str) -> tuple[float, dict[str, Any]] | None:
        rows = self._query("SELECT active, view FROM assets WHERE asset = ? AND view IS NOT NULL", (asset,))
        return (float(rows[0][0]), json.loads(rows[0][1])) if rows else None

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        with self._failures():
            return list(self._db.execute(sql, args).fetchall())

    def _open_episode(self, asset: str) -> Episode | None:
        found = self._episodes("WHERE asset = ? AND closed IS NULL ORDER BY opened DESC LIMIT 1", (asset,))
        return found[0] if found else None

    def _shelve(self, asset: str, now: float) -> Shelve | None:
        row = self._db.execute(
            "SELECT until, note, by FROM shelves WHERE asset = ? AND until > ?", (asset, now)
        ).fetchone()
        return Shelve(float(row[0]), str(row[1]), str(row[2])) if row else None

    def _episodes(self, where: str, args: tuple[Any, ...]) -> list[Episode]:
        with self._reading():
            rows = self._query(f"SELECT {_EPISODE_COLUMNS} FROM episodes {where}", args)
            out = []
            for (
                ident,
                asset,
                opened,
                since,
                evidence,
                readings,
                peak,
                closed,
                closed_by,
                sensors,
                lead,
            ) in rows:
                episode = Episode(id=ident, asset=asset, opened=opened, since=since, evidence=evidence,
                                  readings=readings, peak_score=float("nan") if peak is None else peak,
                                  closed=closed, closed_by=closed_by, lead_sensor=lead)  # fmt: skip
                episode.restore_sensors(json.loads(sensors))
                out.append(episode)
            acks = self._acknowledgements([episode.id for episode in out])
        for episode in out:
            episode.acknowledgements = acks.get(episode.id, [])
        return out

    def _acknowledgements(self, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(ids), SQL_CHUNK):
            chunk = ids[start : start + SQL_CHUNK]
            rows = self._query(
                "SELECT episode_id, at, by, note FROM acknowledgements "
                f"WHERE episode_id IN ({', '.join('?' * len(chunk))}) ORDER BY rowid",
                chunk,
            )
            for ident, at, by, note in rows:
                found.setdefault(ident, []).append({"at": at, "by": by, "note": note})
        return found

    def check_writable(self) -> None:
        """Raise JournalError when the database can no longer be written (readiness)."""
        with self.transaction():
            self._db.execute("PRAGMA user_version = " + str(len(MIGRATIONS)))

    def close(self) -> None:
        self._db.close()


def _finite(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None
