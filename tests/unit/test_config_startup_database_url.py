"""`gateway.database_url` takes the SQLite and PostgreSQL forms the gateway opens, and nothing else.

Any other scheme was passed to SQLAlchemy as written and ended the start-up with a traceback (outside probe:
`mysql://` -> no module MySQLdb) while `manifold check` said ok.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from manifold.config.loader import load_config
from manifold.config.problems import ConfigError


def _load(tmp_path: Path, url: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "manifold.yaml"
    path.write_text(yaml.safe_dump({"gateway": {"database_url": url}}))
    try:
        load_config(path, env=env or {})
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///manifold.db",
        "sqlite:////var/lib/manifold/manifold.db",
        "sqlite+aiosqlite:////var/lib/manifold/manifold.db",
        "postgresql://manifold:pw@db.internal:5432/manifold?ssl=require",
        "postgres://manifold:pw@db.internal/manifold",
        "postgresql+asyncpg://manifold@127.0.0.1:5432/manifold",
    ],
)
def test_the_forms_the_gateway_opens_are_accepted(tmp_path: Path, url: str) -> None:
    assert _load(tmp_path, url) == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://u:p@localhost/db", "database 'mysql' is not supported"),
        ("postgresql+psycopg2://u@h/db", "database 'postgresql+psycopg2' is not supported"),
        ("oracle+cx_oracle://u@h/db", "is not supported"),
        ("manifold.db", "is not a database URL"),
        ("", "is empty"),
        ("sqlite://somehost/manifold.db", "an SQLite URL names no host"),
    ],
)
def test_other_databases_are_a_problem_naming_the_field_and_line(tmp_path: Path, url: str, words: str) -> None:
    problems = _load(tmp_path, url)
    assert len(problems) == 1, problems
    assert problems[0].startswith("manifold.yaml: gateway.database_url: "), problems
    assert words in problems[0] and problems[0].endswith("(line 2)"), problems


def test_a_url_from_the_environment_is_not_shown_in_the_problem(tmp_path: Path) -> None:
    problems = _load(tmp_path, "${DATABASE_URL}", {"DATABASE_URL": "mysql://admin:s3cret-pass@db/x"})
    assert len(problems) == 1 and "not supported" in problems[0], problems
    assert "s3cret" not in problems[0] and "admin" not in problems[0]
