"""Settings come from ANOMALY_* variables only, validated, with a description for every field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from factory_anomaly.app.config import Settings, get_settings


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults(monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"ANOMALY_{name.upper()}", raising=False)
    settings = get_settings()
    assert settings.model_dir == Path("model_store/factory-ae")
    assert (settings.provider, settings.intra_op_threads, settings.inter_op_threads) == ("auto", 1, 1)
    assert (settings.max_batch, settings.max_body_bytes, settings.log_top_sensors) == (1024, 64 << 20, 5)
    assert settings.api_keys == () and settings.admin_token is None
    assert (settings.calibration_window_s, settings.calibration_bucket_s) == (86_400.0, 300.0)
    assert (settings.calibration_alpha, settings.calibration_min_ratio) == (0.01, 2.0)
    assert get_settings() is settings  # cached


def test_environment(monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    monkeypatch.setenv("ANOMALY_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("ANOMALY_ADMIN_TOKEN", "  ")
    monkeypatch.setenv("ANOMALY_PROVIDER", "cpu")
    monkeypatch.setenv("ANOMALY_LOG_LEVEL", "debug")
    monkeypatch.setenv("ANOMALY_MAX_BATCH", "8")
    settings = get_settings()
    assert [key.get_secret_value() for key in settings.api_keys] == ["k1", "k2"]
    assert settings.admin_token is None
    assert (settings.provider, settings.log_level, settings.max_batch) == ("cpu", "DEBUG", 8)
    assert "k1" not in repr(settings)  # secrets never print


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROVIDER", "gpu"),
        ("MAX_BATCH", "0"),
        ("LOG_LEVEL", "loud"),
        ("CALIBRATION_WINDOW_S", "1000"),  # not a whole number of 300 s buckets
        ("CALIBRATION_BUCKET_S", "0"),
        ("CALIBRATION_ALPHA", "1"),
        ("CALIBRATION_MIN_RATIO", "0.5"),
    ],
)
def test_invalid_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None, name: str, value: str
) -> None:
    monkeypatch.setenv(f"ANOMALY_{name}", value)
    with pytest.raises(ValidationError):
        get_settings()


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no docstring"
