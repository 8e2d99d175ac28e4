"""The alarm journal: episodes, acknowledgements and shelves in an embedded SQLite database
(`ANOMALY_ALARM_DB`), so a restart or a reload loses no episode and no acknowledgement.

What is written, and when: an episode when it opens, is acknowledged and closes (its reading count and
peak as they stand then); a shelve when it is set. Between those events the counts live in memory, so a
crash loses at most the readings counted since the last event of an open episode. What is not kept: the
temporal evidence (the rule's window of the last n readings), which rebuilds from an asset's next n
readings; an episode open at a restart stays open and closes by the rule as before.

Schema migrations are numbered (`MIGRATIONS`, `PRAGMA user_version`); a database from a newer version
of the service is refused rather than misread. Standard library only; one connection, used under the
asset book's lock.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from factory_anomaly.alarms.lifecycle import Episode

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
)


class JournalError(RuntimeError):
    """The journal cannot be opened or written (the message names the file and why)."""


class AlarmJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"alarm journal {path}: {exc}") from exc

    def _migrate(self) -> None:
        found = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if found > len(MIGRATIONS):
            raise JournalError(
                f"alarm journal {self.path} has schema version {found}; this service knows up to "
                f"{len(MIGRATIONS)} (a newer service wrote it)"
            )
        for version in range(found, len(MIGRATIONS)):
            # one script, one transaction: the schema and its version number move together
            self._db.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[version]}; PRAGMA user_version = {version + 1}; COMMIT;"
            )

    def _transaction(self) -> Any:
        return _Transaction(self._db, self.path)

    # --- writes ---------------------------------------------------------------------------------------

    def save_episode(self, episode: Episode) -> None:
        """Insert or update an episode's row (open, closed, or its counts as they stand)."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO episodes (id, asset, opened, since, evidence, readings, peak_score, closed, "
                "closed_by, top_sensors, lead_sensor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE "
                "SET readings = excluded.readings, peak_score = excluded.peak_score, "
                "closed = excluded.closed, closed_by = excluded.closed_by, "
                "top_sensors = excluded.top_sensors",
                (episode.id, episode.asset, episode.opened, episode.since, episode.evidence, episode.readings,
                 _finite(episode.peak_score), episode.closed, episode.closed_by,
                 json.dumps(episode.sensor_sums()), episode.lead_sensor),
            )  # fmt: skip

    def save_acknowledgement(self, episode: Episode, ack: dict[str, Any]) -> None:
        with self._transaction():
            self.save_episode(episode)
            self._db.execute(
                "INSERT INTO acknowledgements (episode_id, at, by, note) VALUES (?, ?, ?, ?)",
                (episode.id, ack["at"], ack["by"], ack["note"]),
            )

    def save_shelve(self, asset: str, until: float, note: str, by: str, at: float) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO shelves (asset, until, note, by, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (asset) DO UPDATE SET until = excluded.until, note = excluded.note, "
                "by = excluded.by, at = excluded.at",
                (asset, until, note, by, at),
            )

    # --- reads ----------------------------------------------------------------------------------------

    def open_episodes(self) -> list[Episode]:
        return self._episodes("WHERE closed IS NULL ORDER BY opened", ())

    def closed_episodes(self, limit: int) -> list[Episode]:
        """The `limit` most recently opened closed episodes, oldest first."""
        found = self._episodes("WHERE closed IS NOT NULL ORDER BY opened DESC LIMIT ?", (limit,))
        return found[::-1]

    def shelves(self, now: float) -> list[tuple[str, float, str, str]]:
        """(asset, until, note, by) of every shelve still running at `now`."""
        rows = self._db.execute("SELECT asset, until, note, by FROM shelves WHERE until > ?", (now,))
        return [(str(a), float(u), str(n), str(b)) for a, u, n, b in rows.fetchall()]

    def _episodes(self, where: str, args: tuple[Any, ...]) -> list[Episode]:
        rows = self._db.execute(
            "SELECT id, asset, opened, since, evidence, readings, peak_score, closed, closed_by, "
            f"top_sensors, lead_sensor FROM episodes {where}",
            args,
        ).fetchall()
        out = []
        for ident, asset, opened, since, evidence, readings, peak, closed, closed_by, sensors, lead in rows:
            episode = Episode(id=ident, asset=asset, opened=opened, since=since, evidence=evidence,
                              readings=readings, peak_score=float("nan") if peak is None else peak,
                              closed=closed, closed_by=closed_by, lead_sensor=lead)  # fmt: skip
            episode.restore_sensors(json.loads(sensors))
            acks = self._db.execute(
                "SELECT at, by, note FROM acknowledgements WHERE episode_id = ? ORDER BY rowid", (ident,)
            ).fetchall()
            episode.acknowledgements = [{"at": at, "by": by, "note": note} for at, by, note in acks]
            out.append(episode)
        return out

    def check_writable(self) -> None:
        """Raise JournalError when the database can no longer be written (readiness)."""
        with self._transaction():
            self._db.execute("PRAGMA user_version = " + str(len(MIGRATIONS)))

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error), nested uses joining the outer one; sqlite3 errors
    become JournalError naming the file."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db, self._path = db, path
        self._outer = False

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise JournalError(f"alarm journal {self._path}: {exc}") from exc
            self._outer = True

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if not self._outer:
            return
        try:
            self._db.execute("ROLLBACK" if kind is not None else "COMMIT")
        except sqlite3.Error as error:
            raise JournalError(f"alarm journal {self._path}: {error}") from error
        if isinstance(exc, sqlite3.Error):
            raise JournalError(f"alarm journal {self._path}: {exc}") from exc


def _finite(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None
