"""Both backends' named queries (storage/sqlfiles.py): every name the code asks for is
defined in its backend's file, and every statement in a file is used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage import copy
from storage.sqlfiles import POSTGRES, SQLITE, Queries, parse

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*ROOT.glob("storage/**/*.py"), *ROOT.glob("tests/**/*.py")]
ALIASES = {"SQLITE": SQLITE, "POSTGRES": POSTGRES}
_IMPORT = re.compile(r"from storage\.sqlfiles import (SQLITE|POSTGRES)(?: as (\w+))?")
_LITERAL = re.compile(r'"([a-z0-9_]+)"')


def named_in(source: str, alias: str) -> set[str]:
    """The query names `source` subscripts `alias` with (each literal in the brackets)."""
    names: set[str] = set()
    for match in re.finditer(rf"\b{alias}\[([^\]]+)\]", source):
        names.update(_LITERAL.findall(match.group(1)))
    return names


def test_every_query_named_in_the_code_is_defined() -> None:
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        for which, alias in _IMPORT.findall(source):
            queries = ALIASES[which]
            missing = named_in(source, alias or which) - set(queries)
            assert not missing, f"{path.relative_to(ROOT)} names {missing} not in {queries}"


def test_every_defined_query_is_used() -> None:
    literals: set[str] = set()
    for path in SOURCES:
        if path.name != "test_sqlfiles.py":
            literals.update(_LITERAL.findall(path.read_text(encoding="utf-8")))
    for queries in (SQLITE, POSTGRES):
        assert len(queries) > 20
        unused = set(queries) - literals
        assert not unused, f"{queries} defines {unused}, which nothing names"


def test_sqlite_copy_inserts_the_columns_copy_reads() -> None:
    """`steplog log copy` reads rows in storage.copy's column order; SQLite inserts them so."""

    def columns(sql: str) -> list[str]:
        inside = re.search(r"\(([^)]*)\)", sql)
        assert inside is not None
        return [name.strip() for name in inside.group(1).split(",")]

    assert columns(SQLITE["copy_runs"]) == copy.RUN_COLUMNS
    assert columns(SQLITE["insert_events"]) == copy.EVENT_COLUMNS


def test_parse_names_each_statement_and_refuses_a_name_twice() -> None:
    text = "-- header text\n\n-- one --\n-- why\nSELECT 1;\n\n-- two --\nSELECT\n  2;\n"
    assert parse(text) == {"one": "SELECT 1;", "two": "SELECT\n  2;"}
    with pytest.raises(ValueError, match="'one' is defined twice"):
        parse(text + "\n-- one --\nSELECT 3;\n")


def test_an_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        SQLITE["no_such_query"]
    assert repr(Queries("storage.sqlite")) == "Queries('storage.sqlite')"
