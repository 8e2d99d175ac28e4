"""Error codes are defined once (`ErrorCode`, and the artifact contract's `ArtifactCode`); the docs table,
the metrics' label values, the framework-error mapping and the error classes agree with them."""

from __future__ import annotations

import re

import pytest

from factory_anomaly.app import errors
from factory_anomaly.app.errors import ErrorCode, ServiceError
from factory_anomaly.app.observability.metrics import ERROR_CODES
from factory_anomaly.app.routes.errors import _HTTP_CODES
from factory_anomaly.artifact import ArtifactCode
from tests.app.conftest import ROOT

LOAD_CODES = {ErrorCode.PROVIDER_UNAVAILABLE, ErrorCode.MODEL_INVALID, ErrorCode.GRAPH_MISMATCH}
LOAD_CODES |= {ErrorCode.WARMUP_FAILED}
NEVER_ANSWERED = {ArtifactCode.VERSION_EXISTS}  # publishing only (training), never a serving answer


def documented() -> dict[str, set[int]]:
    """docs/serving.md's error table: code -> the statuses of the rows naming it."""
    table: dict[str, set[int]] = {}
    for line in (ROOT / "docs" / "serving.md").read_text().splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not re.fullmatch(r"[\d, ]+", cells[1].strip()):
            continue
        statuses = {int(s) for s in cells[1].split(",")}
        for code in re.findall(r"`([a-z_]+)`", cells[2]):
            table.setdefault(code, set()).update(statuses)
    return table


def test_the_docs_table_lists_every_code_with_its_status() -> None:
    table = documented()
    expected = {code.value for code in ErrorCode} | {code.value for code in ArtifactCode}
    assert set(table) == expected - {code.value for code in NEVER_ANSWERED}
    for code in ErrorCode:
        if code not in LOAD_CODES and code is not ErrorCode.HTTP_ERROR:
            assert code.status in table[code], code
    for code in (*ArtifactCode, *LOAD_CODES):
        if code not in NEVER_ANSWERED:
            assert 409 in table[code], code  # a failed reload; /readyz answers 503 with the same code


def test_the_metrics_label_values_are_exactly_the_codes() -> None:
    assert set(ERROR_CODES) == {code.value for code in ErrorCode} | {code.value for code in ArtifactCode}
    assert len(ERROR_CODES) == len(set(ERROR_CODES))


def test_framework_errors_map_to_codes_of_their_status() -> None:
    for status, code in _HTTP_CODES.items():
        assert isinstance(code, ErrorCode) and code.status == status


@pytest.mark.parametrize(
    "cls",
    [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ServiceError)],
    ids=lambda c: c.__name__,
)
def test_each_error_class_answers_with_its_code_s_status(cls: type[ServiceError]) -> None:
    assert isinstance(cls.code, ErrorCode) and cls.status == cls.code.status


def test_a_code_given_to_an_error_brings_its_status() -> None:
    error = errors.MalformedRequest("gone", code=ErrorCode.CLIENT_DISCONNECTED)
    assert (error.status, error.code) == (400, "client_disconnected")
    assert ServiceError("x", code=ErrorCode.WRONG_LENGTH).status == 422
    assert ServiceError("x", code=ErrorCode.HTTP_ERROR, status=418).status == 418


def test_no_code_is_written_as_a_string_literal_in_the_service() -> None:
    """Every raise names its code through the enum, so a misspelt code cannot reach a client."""
    codes = {code.value for code in ErrorCode} | {code.value for code in ArtifactCode}
    package = ROOT / "factory_anomaly"
    for path in [*package.joinpath("app").rglob("*.py"), *package.joinpath("artifact").rglob("*.py")]:
        if path.name == "errors.py":
            continue
        code_lines = [
            line for line in path.read_text().splitlines() if not line.strip().startswith(("#", '"""'))
        ]
        literals = {
            lit for line in code_lines for lit in re.findall(r'(?:code=|return |Error\()"([a-z_]+)"', line)
        }
        assert not literals & codes, (path, literals & codes)
