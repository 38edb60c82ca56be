"""Can the gateway keep its state on this machine: `gateway.state_dir` a folder it can make and write, and an
SQLite `gateway.database_url` a file it can open?

`manifold serve` (and the admin commands) make the state folder and open the SQLite file before anything
else (`make=True`): a problem is then one line naming the file, field and line, instead of a traceback from
deep in the start-up (outside probe: a database in a missing folder, `state_dir: /proc/...`, a state_dir
that is a file). `manifold check` only looks (`make=False`) and warns: it may run on another machine than
the gateway, and touches nothing outside the files.

A value that came from `${ENV}` is never shown (it may carry a secret): the problem says what is wrong
without it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from manifold.config.loaded import LoadedConfig
from manifold.config.problems import Problem
from manifold.config.sources import SourceFile, read_yaml


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names (a relative one is relative to the working directory, where SQLite opens
    it); None for another database, an in-memory one or a `file:` URI."""
    scheme, _, rest = url.partition("://")
    if not scheme.startswith("sqlite") or not rest.startswith("/"):
        return None
    path = rest[1:].split("?", 1)[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def state_problems(config: LoadedConfig, *, make: bool) -> list[Problem]:
    """Problems with the state folder and the SQLite database file, by file, field and line. `make`: create
    the state folder (and the SQLite file, as SQLite would) now, as the gateway is about to."""
    problems: list[Problem] = []
    main = SourceFile(config.path, config.path.name, problems)
    read_yaml(main)  # the lines of the fields

    def shown(field: str, path: Path) -> str:
        return "" if config.is_env_sourced(main.display, f"gateway.{field}") else f" '{path}'"

    state_reason = _folder_problem(config.state_dir, make=make, shown=shown("state_dir", config.state_dir))
    if state_reason is not None:
        main.add(("gateway", "state_dir"), state_reason)
        if config.settings.database_url is None:
            return problems  # the database file is in that folder
    if config.settings.database_url is None and not config.state_dir.is_dir():
        return problems  # (`check`) the default file is made in the state folder, which serve makes
    database = sqlite_file(config.database_url)
    if database is None:
        return problems
    field = "database_url" if config.settings.database_url is not None else "state_dir"
    reason = _database_problem(database, make=make, shown=shown(field, database))
    if reason is not None:
        main.add(("gateway", field), reason)
    return problems


def unusable_state(config: LoadedConfig, *, make: bool = True) -> str | None:
    """For the admin commands: make the state folder (and an SQLite file) as `serve` does, or say, file, field
    and line, why it cannot be made; None when it is usable. `make=False`: only look (`db current`)."""
    if problems := state_problems(config, make=make):
        return "configuration has problems:\n" + "\n".join(map(str, problems))
    return None


def _folder_problem(folder: Path, *, make: bool, shown: str) -> str | None:
    if folder.exists() and not folder.is_dir():
        return f"folder{shown} is a file, not a folder"
    if make:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create folder{shown}: {exc.strerror or type(exc).__name__}"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"folder{shown} is not writable"
        return None
    if folder.is_dir():
        return None if os.access(folder, os.W_OK | os.X_OK) else f"folder{shown} is not writable"
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        return f"folder{shown} cannot be created: '{ancestor}' is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"folder{shown} does not exist and cannot be created ('{ancestor}' is not writable)"
    return None


def _database_problem(database: Path, *, make: bool, shown: str) -> str | None:
    if database.is_dir():
        return f"the SQLite database file{shown} is a folder"
    if not database.parent.is_dir():
        # SQLite makes the file, not its folder. (The default file's folder is the state folder, made above.)
        return f"the folder of the SQLite database file{shown} does not exist; create it first"
    if not make:
        return None
    try:
        # Opened as the gateway will (creating an empty file, as SQLite does): not writable, a broken path.
        sqlite3.connect(f"file:{quote(str(database))}?mode=rwc", uri=True).close()
    except sqlite3.Error as exc:
        return f"cannot open the SQLite database file{shown}: {exc}"
    return None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
