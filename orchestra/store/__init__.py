"""Trace stores: where runs, their steps and the registry's changes are kept.

    store = open_store()                      # $ORCHESTRA_DB_URL, else SQLite in $ORCHESTRA_HOME
    store = open_store("postgresql+psycopg://user:password@host/orchestra")
    store = open_store("sqlite://")           # in memory, for tests
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.errors import StoreError
from orchestra.store.memory import InMemoryStore
from orchestra.trace import Store

if TYPE_CHECKING:
    from orchestra.store.sql import SqlStore

__all__ = ["InMemoryStore", "SqlStore", "default_db_url", "open_store", "orchestra_home"]

MEMORY_URL = "memory://"
"""Opens an `InMemoryStore` (no SQL at all)."""


def orchestra_home() -> Path:
    """Orchestra's own folder: ``$ORCHESTRA_HOME``, else ``~/.orchestra``."""
    return Path(os.environ.get("ORCHESTRA_HOME") or Path.home() / ".orchestra").expanduser()


def default_db_url() -> str:
    """``$ORCHESTRA_DB_URL``, else the SQLite file ``orchestra.db`` in `orchestra_home`."""
    if os.environ.get("ORCHESTRA_DB_URL"):
        return os.environ["ORCHESTRA_DB_URL"]
    from sqlalchemy.engine import URL

    # built, not formatted: a '?', '%' or '#' in the path must stay part of the file name
    url = URL.create(drivername="sqlite", database=str(orchestra_home() / "orchestra.db"))
    return url.render_as_string(hide_password=False)


def open_store(url: str | None = None) -> Store:
    """Open the store at ``url`` (else `default_db_url`), creating or upgrading its schema.

    ``memory://`` gives an `InMemoryStore`. A wrong URL or an unreachable database raises `StoreError`."""
    if url is None:
        url = default_db_url()
        if not os.environ.get("ORCHESTRA_DB_URL"):
            home = orchestra_home()
            try:
                home.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(
                    f"cannot make Orchestra's home folder {str(home)!r} for the store (set ORCHESTRA_HOME to "
                    f"another folder, or ORCHESTRA_DB_URL): {error.strerror or error}"
                ) from None
    if url == MEMORY_URL:
        return InMemoryStore()
    from orchestra.store.sql import SqlStore

    return SqlStore(url)


def __getattr__(name: str) -> Any:
    # SqlStore pulls in SQLAlchemy and Alembic: load them only when a SQL store is wanted
    if name == "SqlStore":
        from orchestra.store.sql import SqlStore

        return SqlStore
    raise AttributeError(name)
