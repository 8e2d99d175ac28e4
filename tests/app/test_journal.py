"""The alarm journal: episodes, acknowledgements and shelves survive a restart (a real uvicorn stopped and
started on the same file), the schema is versioned, and a journal that cannot be written turns /readyz
503 without stopping the scoring."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from factory_anomaly.alarms.lifecycle import Episode
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.app.serving.assets import AssetBook, AssetReadings
from factory_anomaly.app.serving.journal import MIGRATIONS, AlarmJournal, JournalError
from factory_anomaly.artifact import Manifest
from tests.app.conftest import AUTH, anomalous, server_env, start_server, stop_server

RULE = EpisodeRule(k=2, n=3, level=1.0, close_after=3)
NAMES = ("a", "b", "c")


def _readings(asset: str, scores: list[float], start: float = 0.0) -> AssetReadings:
    errors = np.tile(np.array([[3.0, 1.0, 0.0]], np.float32), (len(scores), 1))
    return AssetReadings(asset, [start + i for i in range(len(scores))], [None] * len(scores),
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
    assert episode["top_sensors"][0] == {"index": 0, "name": "a", "share": 0.75}
    assert again.alarm(closed.id)["closed_by"] == "quiet"
    states = {a["asset"]: a["state"] for a in again.assets(now=20.0)}
    assert states == {"press-7": "acknowledged", "press-9": "shelved"}
    # the restored episode goes on under the rule: quiet readings close it
    seen = again.observe(_readings("press-7", [0.0, 0.0, 0.0], start=30.0), RULE, now=30.0)
    assert seen[-1].closed is not None and seen[-1].closed.id == opened.id
    again.close()


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
