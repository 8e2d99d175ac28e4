"""The alarm journal: episodes, acknowledgements and shelves survive a restart (a real uvicorn stopped and
started on the same file), the schema is versioned, and a journal that cannot be written turns /readyz
503 without stopping the scoring."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factory_anomaly.alarms.lifecycle import Episode
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.app.errors import NotFound
from factory_anomaly.app.serving.assets import AssetBook, AssetReadings
from factory_anomaly.app.serving.journal import MIGRATIONS, AlarmJournal, JournalError
from factory_anomaly.artifact import Manifest
from tests.app.conftest import AUTH, anomalous, server_env, start_server, stop_server

RULE = EpisodeRule(k=2, n=3, level=1.0, close_after=3)
DAY = 86_400.0
NAMES = ("a", "b", "c")


def _readings(
    asset: str, scores: list[float], start: float = 0.0, ids: list[str] | None = None
) -> AssetReadings:
    errors = np.tile(np.array([[3.0, 1.0, 0.0]], np.float32), (len(scores), 1))
    return AssetReadings(asset, [start + i for i in range(len(scores))], ids or [None] * len(scores),
                         np.array(scores, np.float32), errors, NAMES)  # fmt: skip


def test_a_book_comes_back_from_its_journal(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite3"
    book = AssetBook(3600, 100, journal=AlarmJournal(path))
    opened = book.observe(_readings("press-7", [5.0, 5.0]), RULE, now=10.0)[-1].opened
    assert opened is not None
    book.acknowledge(opened.id, "on it", "ana", now=11.0)
    closed = book.observe(_readings("press-8", [5.0, 5.0, 0.0, 0.0, 0.0]), RULE, now=12.0)[-1].closed
    assert closed is not None
    book.observe(_readings("press-9", [0.0]), RULE, now=13.0)
    book.shelve("press-9", 3600.0, "maintenance", "ben", now=14.0)
    book.close()

    again = AssetBook(3600, 100, journal=AlarmJournal(path))
    assert again.restore(now=20.0) == 1
    episode = again.alarm(opened.id)
    assert episode["closed"] is None and episode["acknowledgements"][0]["note"] == "on it"
    assert episode["lead_sensor"] == "a"  # fixed at opening, kept across the restart
    # the counts and the first mention come back too: one reading (the opening one) named it, at ts 1
    assert episode["top_sensors"][0] == {"index": 0, "name": "a", "share": 0.75, "readings": 1, "since": 1.0,
                                          "direction": None}  # fmt: skip
    assert again.alarm(closed.id)["closed_by"] == "quiet"
    states = {a["asset"]: a["state"] for a in again.assets(now=20.0)}
    assert states == {"press-7": "acknowledged", "press-9": "shelved"}
    # the restored episode goes on under the rule: quiet readings close it
    seen = again.observe(_readings("press-7", [0.0, 0.0, 0.0], start=30.0), RULE, now=30.0)
    assert seen[-1].closed is not None and seen[-1].closed.id == opened.id
    again.close()


def test_old_closed_episodes_leave_the_journal_open_ones_stay(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite3"
    book = AssetBook(10 * DAY, 100, journal=AlarmJournal(path), retention_s=DAY)
    old = book.observe(_readings("press-1", [5.0, 5.0, 0.0, 0.0, 0.0]), RULE, now=10.0)[-1].closed
    assert old is not None
    book.acknowledge(old.id, "seen", "ana", now=11.0)
    still_open = book.observe(_readings("press-2", [5.0, 5.0], start=20.0), RULE, now=20.0)[-1].opened
    recent = book.observe(_readings("press-3", [5.0, 5.0, 0.0, 0.0, 0.0], start=DAY), RULE, now=DAY)
    assert still_open is not None and recent[-1].closed is not None
    book.sync(now=DAY + 100.0)  # the first sync cuts to the retention: press-1's episode closed a day ago
    journal = AlarmJournal(path)
    ids = {row[0] for row in journal._db.execute("SELECT id FROM episodes")}
    acks = journal._db.execute("SELECT COUNT(*) FROM acknowledgements").fetchone()[0]
    assert ids == {still_open.id, recent[-1].closed.id} and acks == 0
    book.close()
    journal.close()


def test_a_journal_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
    db.execute("INSERT INTO episodes VALUES ('e1', 'press-7', 1.0, 1.0, 'x', 3, 2.0, NULL, NULL, '[]')")
    db.commit()
    db.close()
    journal = AlarmJournal(path)
    (episode,) = journal.open_episodes()
    assert episode.id == "e1" and episode.lead_sensor is None
    assert int(journal._db.execute("PRAGMA user_version").fetchone()[0]) == len(MIGRATIONS)
    book = AssetBook(3600, 100, journal=journal)  # schema 3 lists its asset, held by no one: adopted
    assert book.restore(now=2.0) == 1 and [a["asset"] for a in book.assets(now=2.0)] == ["press-7"]


def test_a_journal_from_a_newer_service_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite3"
    AlarmJournal(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer service"):
        AlarmJournal(path)


def test_a_failed_write_is_recorded_not_raised(tmp_path: Path) -> None:
    journal = AlarmJournal(tmp_path / "alarms.sqlite3")
    book = AssetBook(3600, 100, journal=journal)
    journal._db.execute("PRAGMA query_only = ON")  # every write now fails, as on a read-only volume
    seen = book.observe(_readings("press-7", [5.0, 5.0]), RULE, now=1.0)
    assert seen[-1].opened is not None  # the reading is answered, the alarm kept in memory
    assert book.journal_error is not None and "readonly" in book.journal_error.lower()
    assert book.check_journal() is not None
    journal._db.execute("PRAGMA query_only = OFF")
    assert book.check_journal() is None


def test_restart_keeps_episodes_and_acknowledgements_over_http(
    store: Path, manifest: Manifest, tmp_path: Path
) -> None:
    env = server_env(store, ANOMALY_ALARM_DB=str(tmp_path / "alarms.sqlite3"))
    server = start_server(tmp_path / "first.log", env)
    try:
        with server.client(headers=AUTH) as client:
            x = np.repeat(anomalous(manifest)[None, :], 3, axis=0).tolist()
            answer = client.post(
                "/v1/score/batch", json={"vectors": x}, headers={"X-Asset": "press-7"}
            ).json()
            alarm_id = answer["results"][-1]["alarm"]["id"]
            assert client.post(f"/v1/alarms/{alarm_id}/ack", json={"note": "valve"}).status_code == 200
    finally:
        stop_server(server)
    server = start_server(tmp_path / "second.log", env)
    try:
        with server.client(headers=AUTH) as client:
            episode = client.get(f"/v1/alarms/{alarm_id}").json()
            assert episode["closed"] is None and episode["acknowledgements"][0]["note"] == "valve"
            assert [e["id"] for e in client.get("/v1/alarms").json()["alarms"]] == [alarm_id]
            assert client.get("/v1/assets/press-7").json()["state"] == "acknowledged"
    finally:
        stop_server(server)


def test_an_unwritable_journal_is_not_ready_but_still_scores(
    store: Path, tmp_path: Path, readings: np.ndarray
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the journal's directory should be")
    env = server_env(store, ANOMALY_ALARM_DB=str(blocked / "alarms.sqlite3"))
    server = start_server(tmp_path / "server.log", env, wait_ready=False)
    try:
        with server.client(headers=AUTH) as client:
            ready = client.get("/readyz")
            for _ in range(100):
                if ready.status_code != 503 or ready.json()["error"]["code"] == "journal_unavailable":
                    break
                ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "journal_unavailable"
            assert "alarm journal" in ready.json()["error"]["message"]
            scored = client.post("/v1/score", json={"values": readings[0].tolist()}, headers={"X-Asset": "p"})
            assert scored.status_code == 200 and scored.json()["alarm"]["state"] == "none"
    finally:
        stop_server(server)


def test_episode_sensor_sums_round_trip() -> None:
    episode = Episode(id="e", asset="a", opened=1.0, since=1.0, evidence="x")
    episode.note_sensors([(2, "c", 0.5), (0, "a", 0.25)])
    again = Episode(id="e", asset="a", opened=1.0, since=1.0, evidence="x")
    again.restore_sensors([list(t) for t in episode.sensor_sums()])
    assert again.top_sensors() == episode.top_sensors()


# --- several processes on one journal (docs/serving.md, "More than one process") ---------------------------


def _books(path: Path, n: int = 2, lease_s: float = 10.0) -> list[AssetBook]:
    """`n` asset books on one journal file, as `n` processes of the service would hold it."""
    books = [AssetBook(3600, 100, journal=AlarmJournal(path), lease_s=lease_s) for _ in range(n)]
    for book in books:
        book.restore(now=0.0)
    return books


def test_an_acknowledgement_through_another_process_reaches_the_holder(tmp_path: Path) -> None:
    holder, other = _books(tmp_path / "alarms.sqlite3")
    opened = holder.observe(_readings("press-7", [5.0, 5.0]), RULE, now=1.0)[-1].opened
    assert opened is not None
    holder.sync(now=1.5)
    # the other process answers about what it does not hold from the journal
    assert [e["id"] for e in other.alarms("open")] == [opened.id]
    assert other.asset("press-7", now=2.0)["state"] == "open" and other.assets(now=2.0) == []
    acked = other.acknowledge(opened.id, "on it", "ana", now=2.0)
    assert acked["acknowledgements"] == [{"at": 2.0, "by": "ana", "note": "on it"}]
    assert holder.assets(now=2.5)[0]["state"] == "open"  # until its next sync
    holder.sync(now=3.0)
    assert holder.assets(now=3.0)[0]["state"] == "acknowledged"
    assert holder.alarm(opened.id)["acknowledgements"] == acked["acknowledgements"]
    with pytest.raises(NotFound):
        other.acknowledge("no-such-episode", "", "", now=3.0)
    with pytest.raises(NotFound):
        other.asset("never-seen", now=3.0)


def test_a_reading_elsewhere_takes_the_asset_over_and_its_episode_goes_on(tmp_path: Path) -> None:
    first, second = _books(tmp_path / "alarms.sqlite3")
    ids = [f"r{i}" for i in range(3)]
    counted = first.observe(_readings("press-7", [5.0, 5.0, 0.0], ids=ids), RULE, now=1.0)
    opened = counted[1].opened
    assert opened is not None
    first.sync(now=1.5)
    # the proxy now sends press-7 to the second process: the client retries its last request there
    again = second.observe(_readings("press-7", [5.0, 5.0, 0.0], ids=ids), RULE, now=2.0)
    assert [(s.late, s.repeated) for s in again] == [(True, False), (True, False), (False, True)]
    assert all(s.alarm["id"] == opened.id for s in again)  # answered with the episode, counted nowhere
    more = second.observe(_readings("press-7", [0.0], start=3.0), RULE, now=3.0)[0]
    assert more.alarm["id"] == opened.id and more.opened is None  # no duplicate: the same episode goes on
    assert second.assets(now=3.0)[0]["readings"] == 4  # three counted there, one here
    first.sync(now=3.5)
    assert first.assets(now=3.5) == []  # it forgot press-7: no second alarm in its metrics
    closed = second.observe(_readings("press-7", [0.0], start=4.0), RULE, now=4.0)[0].closed
    # the quiet count came along: the third quiet reading closes it, as in one process
    assert closed is not None and closed.id == opened.id and closed.readings == 4


def test_a_clean_stop_hands_the_alarms_to_a_live_process(tmp_path: Path) -> None:
    leaving, staying = _books(tmp_path / "alarms.sqlite3")
    opened = leaving.observe(_readings("press-7", [5.0, 5.0]), RULE, now=1.0)[-1].opened
    assert opened is not None
    leaving.observe(_readings("press-8", [0.0]), RULE, now=1.0)
    leaving.shelve("press-8", 600.0, "maintenance", "ben", now=1.0)
    leaving.observe(_readings("press-9", [0.0]), RULE, now=1.0)
    leaving.close()
    staying.sync(now=2.0)
    states = {a["asset"]: a["state"] for a in staying.assets(now=2.0)}
    assert states == {"press-7": "open", "press-8": "shelved"}  # adopted: its metrics carry them now
    listed = {a["asset"] for a in staying.listing(now=2.0)}
    assert listed == {"press-7", "press-8", "press-9"}


def test_a_silent_holder_s_alarms_are_adopted_once_its_lease_ends(tmp_path: Path) -> None:
    crashed, staying = _books(tmp_path / "alarms.sqlite3", lease_s=5.0)
    crashed.observe(_readings("press-7", [5.0, 5.0]), RULE, now=1.0)
    crashed.sync(now=1.0)  # its lease runs to 6.0; then it stops syncing, as a crashed process would
    staying.sync(now=4.0)
    assert staying.assets(now=4.0) == []
    staying.sync(now=7.0)
    assert [a["state"] for a in staying.assets(now=7.0)] == ["open"]


def test_a_shelve_through_another_process_closes_the_holder_s_episode(tmp_path: Path) -> None:
    holder, other = _books(tmp_path / "alarms.sqlite3")
    opened = holder.observe(_readings("press-7", [5.0, 5.0]), RULE, now=1.0)[-1].opened
    assert opened is not None
    holder.sync(now=1.5)
    shelved = other.shelve("press-7", 600.0, "maintenance", "ben", now=2.0)
    assert shelved["state"] == "shelved" and shelved["shelved_until"] == 602.0
    holder.observe(_readings("press-7", [5.0], start=2.0), RULE, now=2.5)  # sees it before counting
    assert holder.assets(now=2.5)[0]["state"] == "shelved"
    holder.sync(now=3.0)
    episode = other.alarm(opened.id)
    assert episode["closed"] == 2.0 and episode["closed_by"] == "shelved"
    assert [e["id"] for e in holder.alarms("open")] == []


def test_processes_write_one_journal_at_once(tmp_path: Path) -> None:
    """Two processes taking assets and writing episodes as fast as they can: SQLite's busy timeout makes
    each wait for the other's transaction, none fails."""
    path = tmp_path / "alarms.sqlite3"
    AlarmJournal(path).close()
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from factory_anomaly.alarms.lifecycle import Episode\n"
        "from factory_anomaly.app.serving.journal import AlarmJournal\n"
        "journal, me = AlarmJournal(Path(sys.argv[1])), sys.argv[2]\n"
        "for i in range(300):\n"
        "    journal.take(f'press-{i % 7}', me, float(i))\n"
        "    journal.save_episode(Episode(id=f'{me}-{i}', asset='p', opened=1.0, since=1.0, evidence='x'))\n"
        "    journal.heartbeat(me, float(i), 10.0)\n"
        "    journal.changes(0)\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, str(path), name], stderr=subprocess.PIPE)
            for name in ("a", "b")]  # fmt: skip
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()
    assert len(AlarmJournal(path).closed_episodes(1000) + AlarmJournal(path).open_episodes()) == 600
