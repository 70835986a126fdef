"""The trace store on SQLAlchemy 2: SQLite by default (WAL), PostgreSQL by URL (psycopg 3).

Every append is its own short transaction, so what a run has done is on disk the moment it is done and a crash
loses nothing already stored. The schema is made by the Alembic migrations in ``orchestra/store/migrations``,
run on open.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

from orchestra.errors import DuplicateIdError, NotFoundError, StoreError
from orchestra.store._common import (
    RUN_FIELDS_UPDATED_ON_FINISH,
    check_page,
    check_window,
    interrupted_error,
    is_orphaned,
    mask_url,
    now,
    session_title,
    url_password,
    utc,
    utf8_json_value,
    utf8_text,
)
from orchestra.trace import RegistryEvent, RunRecord, RunStatus, RunTrace, StepRecord

__all__ = ["SqlStore", "metadata", "registry_events", "runs", "sessions", "steps"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 15_000
"""How long a writer waits for another process's write lock before giving up with `StoreError`."""
SQLITE_MIGRATION_WAIT_S = 120.0
"""How long opening a store waits for other processes migrating the same new file: a migration holds the write
lock for as long as it takes, which on a busy machine can pass the busy timeout."""
_SEQ_RETRIES = 50
_PG_MIGRATION_LOCK = zlib.crc32(b"orchestra.store.migrations")
"""Advisory lock key that lets one process at a time migrate a shared PostgreSQL database."""
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
"""What an integer column holds on every backend (PostgreSQL's INTEGER)."""
_WRITE = "orchestra_write"
"""Execution option that marks a connection as a writer, so SQLite takes its write lock at BEGIN."""


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC on every backend (SQLite keeps no zone: it gets UTC wall time)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        value = utc(value)
        if value is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return utc(value)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
"""The schema as the code expects it; migration ``0001_initial`` creates exactly this (a test checks it)."""

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("title", sa.Text, nullable=True),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("session_id", sa.String, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("router", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("answer", sa.Text, nullable=True),
    sa.Column("error", _json(), nullable=True),
    sa.Column("registry_version", sa.Integer, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    # no foreign key: a replay may outlive, or come from another store than, the run it replays
    sa.Column("replay_of", sa.String, nullable=True),
    sa.Column("replay_mode", sa.String, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Double, nullable=True),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column("meta", _json(), nullable=False),
    sa.Index(None, "started_at"),
    sa.Index(None, "session_id", "started_at"),
    sa.Index(None, "status", "started_at"),
    sa.Index(None, "router", "started_at"),
    sa.Index(None, "replay_of"),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("run_id", sa.String, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    # no foreign key: parallel calls may append a child (a model call) before its parent (the agent call)
    sa.Column("parent_id", sa.String, nullable=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("agent_id", sa.String, nullable=True),
    sa.Column("model_id", sa.String, nullable=True),
    sa.Column("request", _json(), nullable=False),
    sa.Column("response", _json(), nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Double, nullable=True),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column("error", _json(), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # also the index that reads a run's steps in order and finds the next seq
    sa.UniqueConstraint("run_id", "seq"),
)

registry_events = sa.Table(
    "registry_events",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("card_id", sa.String, nullable=False),
    sa.Column("card", _json(), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
)

# Statements built once: the values go in as parameters, so each call skips building and hashing a new statement
# (that alone was most of an append's time). An append is one statement: the next seq is computed inside the
# INSERT, so it needs no separate read.
_APPEND_STEP = (
    steps.insert()
    .from_select(
        [column.name for column in steps.c if column.name != "seq"] + ["seq"],
        sa.select(
            *[sa.bindparam(column.name, type_=column.type) for column in steps.c if column.name != "seq"],
            sa.func.coalesce(sa.func.max(steps.c.seq), 0) + 1,
        ).where(steps.c.run_id == sa.bindparam("run_id", type_=steps.c.run_id.type)),
    )
    .returning(steps.c.seq)
)
_INSERT_RUN = runs.insert()
# built once: building an INSERT or UPDATE per call costs more than SQLite takes to run it
_INSERT_SESSION = {
    "sqlite": sqlite.insert(sessions).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(sessions).on_conflict_do_nothing(),
}
_FINISH_RUN = runs.update().where(runs.c.id == sa.bindparam("finished_run_id"))
_INSERT_EVENT = registry_events.insert()

_RUN_COLUMNS = [runs.c[name] for name in RunRecord.model_fields]
_STEP_COLUMNS = [steps.c[name] for name in StepRecord.model_fields]
_EVENT_COLUMNS = [registry_events.c[name] for name in RegistryEvent.model_fields]


def _run_row(run: RunRecord) -> dict[str, Any]:
    row = run.model_dump(mode="json")
    row["started_at"], row["finished_at"] = run.started_at, run.finished_at
    return row


_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
"""A ``\u0000`` escape in JSON text (one preceded by an even number of backslashes, so not a literal)."""


def _utf8_json(value: Any) -> str:
    text = json.dumps(value)
    # json.dumps escapes every surrogate as \udXXX: only then can the value hold a lone one (rare, so the
    # value is walked only then)
    return json.dumps(utf8_json_value(value)) if "\\ud" in text else text


def _json_without_nul(value: Any) -> str:
    # PostgreSQL text and JSONB cannot hold NUL; a garbage model answer must not make its trace unstorable
    return _JSON_NUL.sub(r"\1\\ufffd", _utf8_json(value))


def _utf8_text_without_nul(text: str) -> str:
    return utf8_text(text).replace("\x00", "\ufffd")


def _normalise_url(url: str | URL) -> URL:
    parsed = sa.make_url(url)
    # the only PostgreSQL driver Orchestra ships with is psycopg 3; SQLAlchemy's default would be psycopg2
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class SqlStore:
    """The `Store` contract on a SQL database. Thread-safe: one engine, one short transaction per call.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/orchestra.db`` (WAL), ``sqlite://`` (in memory, for tests) or
    ``postgresql+psycopg://user:password@host/db``. Opening creates or upgrades the schema. A wrong URL or an
    unreachable database raises `StoreError`, naming the URL with its password masked.

    PostgreSQL cannot store the NUL character: there it is kept as U+FFFD (``�``), in text and JSON alike. No
    backend can store a lone surrogate (``"\\ud800"``, not UTF-8): every one keeps U+FFFD for it."""

    def __init__(self, url: str | URL) -> None:
        self._shown_url = mask_url(url if isinstance(url, str) else url.render_as_string(hide_password=True))
        password = url_password(url) if isinstance(url, str) else None
        if password and "@" in password:
            # SQLAlchemy would split the password at its first '@' and take the rest for the host, which then
            # shows in every message
            raise StoreError(
                f"store URL {self._shown_url!r} is not a valid database URL: its password holds an '@', which "
                "must be written %40"
            )
        try:
            parsed = _normalise_url(url)
        except (sa_exc.ArgumentError, ValueError) as error:
            reason = str(error).replace(password, "***") if password else str(error)
            raise StoreError(f"store URL {self._shown_url!r} is not a valid database URL: {reason}") from None
        self._shown_url = parsed.render_as_string(hide_password=True)
        self._password = parsed.password
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        self._is_memory = self._is_sqlite and parsed.database in (None, "", ":memory:")
        is_postgres = parsed.get_backend_name() == "postgresql"
        self._clean_text: Callable[[str], str] = _utf8_text_without_nul if is_postgres else utf8_text
        """What a text is stored as; ids looked up go through it too, so they find what was stored."""
        # SQLite allows one writer at a time: queueing writers here is far cheaper than SQLite's busy-wait.
        # In memory, all threads share one connection, so readers queue too.
        self._sqlite_lock = threading.RLock()
        self._sqlite_writer: Connection | None = None
        """SQLite's one writing connection, kept open: taking one from the pool per append costs more than the
        append. Used only under ``_sqlite_lock``."""
        # Elsewhere, appends to one run queue so they need not race for the next seq (other processes still
        # may, which the unique constraint and a retry cover); appends to different runs go in parallel.
        self._run_locks = [threading.Lock() for _ in range(64)]
        with self._db_errors("open"):
            self._engine = self._create_engine(parsed)
            self._writer = self._engine.execution_options(**{_WRITE: True})
            self._migrate()

    # -- plumbing ------------------------------------------------------------------------------------------

    def _create_engine(self, url: URL) -> Engine:
        if not self._is_sqlite:
            connect_args = {"connect_timeout": 10} if url.get_backend_name() == "postgresql" else {}
            return sa.create_engine(
                url, pool_pre_ping=True, connect_args=connect_args, json_serializer=_json_without_nul
            )
        # every use is a `begin()` block that commits or rolls back, so the pool need not roll back again on return
        if self._is_memory:
            engine = sa.create_engine(
                url,
                poolclass=StaticPool,
                pool_reset_on_return=None,
                connect_args={"check_same_thread": False},
                json_serializer=_utf8_json,
            )
        else:
            engine = sa.create_engine(
                url,
                pool_reset_on_return=None,
                json_serializer=_utf8_json,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front;
            # switch it off and BEGIN ourselves (the "begin" hook below)
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not self._is_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # in WAL mode NORMAL survives a crash of the process (not of the OS or power): each commit is in
                # the WAL file before commit returns, only the fsync waits for a checkpoint
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @sa_event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            # a writer takes SQLite's write lock at BEGIN instead of part-way through, where it could deadlock
            statement = "BEGIN IMMEDIATE" if connection.get_execution_options().get(_WRITE, False) else "BEGIN"
            # straight to the driver: this runs once per transaction, and SQLAlchemy's statement path costs more
            # than the BEGIN itself
            try:
                # checked out for this transaction, the driver's connection is there (None only once invalidated)
                connection.connection.dbapi_connection.execute(statement)  # type: ignore[union-attr]
            except sqlite3.Error as error:
                # this hook runs outside SQLAlchemy's error handling: wrap the driver's error as it would, so
                # `_db_errors` sees it (a write lock held past the busy timeout fails here)
                raise sa_exc.DBAPIError.instance(statement, None, error, sqlite3.Error) from None

        return engine

    def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        scripts = ScriptDirectory.from_config(config)
        head = scripts.get_current_head()
        deadline = time.monotonic() + SQLITE_MIGRATION_WAIT_S
        while True:
            try:
                # up to date is the usual case: checked by a read, which in WAL mode waits for no writer (a
                # read-only command must not queue behind a long write), and without Alembic's set-up (and its log
                # lines); a new file's first connection switches it to WAL, which waits for a migration under way
                with self._engine.begin() as connection:
                    if self._revisions(connection, scripts) == [head]:
                        return
                with self._sqlite_locked(), self._writer.begin() as connection:
                    # again under the write lock: another process may have migrated since the read
                    if self._revisions(connection, scripts) == [head]:
                        return
                    if connection.dialect.name == "postgresql":
                        # two processes opening a new database at once must not both create the tables
                        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
                    config.attributes["connection"] = connection
                    # inside this transaction: a migration that fails leaves the database as it was (SQLite and
                    # PostgreSQL both roll DDL back)
                    command.upgrade(config, "head")
                return
            except sa_exc.OperationalError as error:
                # another process is migrating the same new file: wait for it past the busy timeout
                if not (self._is_sqlite and "database is locked" in str(error.orig)) or time.monotonic() >= deadline:
                    raise

    def _revisions(self, connection: Connection, scripts: ScriptDirectory) -> list[str]:
        if not sa.inspect(connection).has_table("alembic_version"):
            return []
        revisions = list(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
        known = {script.revision for script in scripts.walk_revisions()}
        for revision in revisions:
            if revision not in known:
                # Alembic would fail with a traceback ("Can't locate revision"); migrating it could only do harm
                raise StoreError(
                    f"store {self._shown_url!r}: database schema revision {revision} is not one this Orchestra "
                    f"knows (newest: {scripts.get_current_head()}): it was made by a newer Orchestra or another "
                    "application"
                )
        return revisions

    @contextmanager
    def _sqlite_locked(self) -> Iterator[None]:
        if self._is_sqlite:
            with self._sqlite_lock:
                yield
        else:
            yield

    def _sqlite_connection(self) -> Connection:
        if self._sqlite_writer is None or self._sqlite_writer.closed:
            self._sqlite_writer = self._writer.connect()
        return self._sqlite_writer

    @contextmanager
    def _write(self, run_id: str | None = None) -> Iterator[Connection]:
        with self._db_errors("write"), self._writing(run_id) as connection:
            yield connection

    @contextmanager
    def _writing(self, run_id: str | None) -> Iterator[Connection]:
        if self._is_sqlite:
            with self._sqlite_lock, self._sqlite_connection().begin():
                yield self._sqlite_connection()
        elif run_id is not None:
            with self._run_locks[hash(run_id) % len(self._run_locks)], self._writer.begin() as connection:
                yield connection
        else:
            with self._writer.begin() as connection:
                yield connection

    @staticmethod
    def _refused_as_read_only(error: sa_exc.DBAPIError) -> bool:
        """Whether the database refused a write because it, or this role, may only read."""
        orig = error.orig
        if isinstance(orig, sqlite3.Error):
            return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_READONLY
        # PostgreSQL: insufficient_privilege, read_only_sql_transaction (a standby, default_transaction_read_only)
        return getattr(orig, "sqlstate", None) in ("42501", "25006")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        # one transaction per read, so a run and its steps come from the same snapshot
        with self._db_errors("read"):
            if self._is_memory:
                with self._sqlite_lock, self._sqlite_connection().begin():
                    yield self._sqlite_connection()
            else:
                with self._engine.begin() as connection:
                    yield connection

    @contextmanager
    def _db_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sa_exc.OperationalError as error:
            if self._is_sqlite and "database is locked" in str(error.orig):
                # the driver's "database is locked" names neither the cause nor how long it waited
                raise StoreError(
                    f"store {self._shown_url!r}: cannot {action}: database is locked by another writer for more "
                    f"than {SQLITE_BUSY_TIMEOUT_MS / 1000:g} s"
                ) from None
            raise StoreError(f"store {self._shown_url!r}: cannot {action}: {self._redact(error)}") from None
        except sa_exc.IntegrityError:
            raise  # a clash of ids: each caller turns it into the DuplicateIdError or NotFoundError it means
        except (
            # every driver error SQLAlchemy wraps: not a database, no privilege, bad connection option or
            # search_path, a value out of the column's range
            sa_exc.DBAPIError,
            sa_exc.NoSuchModuleError,
            sa_exc.ArgumentError,
        ) as error:
            raise StoreError(f"store {self._shown_url!r}: cannot {action}: {self._redact(error)}") from None
        except ImportError as error:
            # psycopg is Orchestra's own (the postgres extra); any other driver is the user's choice to install
            hint = "; pip install 'orchestra-routing[postgres]'" if (error.name or "").partition(".")[0] == "psycopg" else ""
            raise StoreError(f"store {self._shown_url!r}: database driver missing: {error}{hint}") from None

    def _redact(self, error: BaseException) -> str:
        # a driver's message is only kept to its first line (no SQL, no parameters) and never with the password
        text = str(getattr(error, "orig", None) or error).strip().splitlines()
        message = mask_url(text[0] if text else type(error).__name__)
        if self._password:
            message = message.replace(self._password, "***")
        return message

    def _clean(self, row: dict[str, Any]) -> dict[str, Any]:
        for key, value in row.items():
            # every integer column is 32-bit on PostgreSQL; SQLite would take more, so both refuse it alike
            if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
                raise StoreError(
                    f"store {self._shown_url!r}: cannot write: {key} {value} is out of range "
                    f"({_INT_MIN} to {_INT_MAX})"
                )
        return {key: self._clean_text(value) if isinstance(value, str) else value for key, value in row.items()}

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return self._shown_url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for inspection and maintenance."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection. Everything appended is already committed."""
        with self._sqlite_lock:
            if self._sqlite_writer is not None:
                self._sqlite_writer.close()
                self._sqlite_writer = None
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self._shown_url!r})"

    # -- runs and steps ------------------------------------------------------------------------------------

    def start_run(self, run: RunRecord) -> None:
        """Store a new run (its session is created on first use); `DuplicateIdError` when the id is taken."""
        try:
            with self._write(run.id) as connection:
                self._ensure_session(connection, run)
                connection.execute(_INSERT_RUN, self._clean(_run_row(run)))
        except sa_exc.IntegrityError:
            raise DuplicateIdError("run", run.id) from None

    def _ensure_session(self, connection: Connection, run: RunRecord) -> None:
        row = self._clean({"id": run.session_id, "created_at": now(), "title": session_title(run.query)})
        insert = _INSERT_SESSION.get(connection.dialect.name)
        if insert is not None:
            connection.execute(insert, row)
        elif connection.execute(sa.select(sessions.c.id).where(sessions.c.id == run.session_id)).first() is None:
            connection.execute(sessions.insert(), row)

    def append_step(self, step: StepRecord) -> StepRecord:
        """Append one step in its own transaction and return it with ``seq`` set (1, 2, ... per run, no gaps,
        even with many threads appending to one run)."""
        row = self._clean({**step.model_dump(mode="json"), "created_at": step.created_at})
        for _attempt in range(_SEQ_RETRIES):
            try:
                with self._write(step.run_id) as connection:
                    seq = connection.execute(_APPEND_STEP, row).scalar_one()
                return step.model_copy(update={"seq": seq})
            except sa_exc.IntegrityError:
                self._explain_step_conflict(step)
                # else another process (PostgreSQL) took this seq between our read and insert: number it again
        raise StoreError(
            f"store {self._shown_url!r}: could not number a step of run {step.run_id!r}: too much contention"
        )

    def _explain_step_conflict(self, step: StepRecord) -> None:
        run_id, step_id = self._clean_text(step.run_id), self._clean_text(step.id)
        with self._read() as connection:
            if connection.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first() is None:
                raise NotFoundError("run", step.run_id)
            if connection.execute(sa.select(steps.c.id).where(steps.c.id == step_id)).first() is not None:
                raise DuplicateIdError("step", step.id)

    def finish_run(self, run: RunRecord) -> None:
        """Store the run's final status, answer, error, totals and end time; `NotFoundError` for an unknown run."""
        row = self._clean(_run_row(run))
        with self._write(run.id) as connection:
            finished = {name: row[name] for name in RUN_FIELDS_UPDATED_ON_FINISH}
            updated = connection.execute(_FINISH_RUN, {"finished_run_id": row["id"], **finished})
            if updated.rowcount == 0:
                raise NotFoundError("run", run.id)

    def get_run(self, run_id: str) -> RunTrace:
        key = self._clean_text(run_id)
        with self._read() as connection:
            run_row = connection.execute(sa.select(*_RUN_COLUMNS).where(runs.c.id == key)).mappings().first()
            if run_row is None:
                raise NotFoundError("run", run_id)
            step_rows = connection.execute(
                sa.select(*_STEP_COLUMNS).where(steps.c.run_id == key).order_by(steps.c.seq)
            ).mappings()
            return RunTrace(
                run=RunRecord.model_validate(dict(run_row)),
                steps=[StepRecord.model_validate(dict(row)) for row in step_rows],
            )

    def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        router: str | None = None,
        id_prefix: str | None = None,
        replays: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first (ties broken by id, descending), filtered and paged; ``id_prefix`` matches the start of
        the id exactly, case and all (ids are lowercase hex)."""
        check_page(limit, offset)
        since, until = check_window(since, until)
        query = sa.select(*_RUN_COLUMNS)
        if session_id is not None:
            query = query.where(runs.c.session_id == self._clean_text(session_id))
        if status is not None:
            query = query.where(runs.c.status == status)
        if router is not None:
            query = query.where(runs.c.router == self._clean_text(router))
        if id_prefix is not None:
            prefix = self._clean_text(id_prefix)
            # not LIKE: SQLite's ignores case, PostgreSQL's does not; a prefix matches case and all on both
            query = query.where(sa.func.substr(runs.c.id, 1, len(prefix)) == prefix)
        if replays is not None:
            query = query.where(runs.c.replay_of.is_not(None) if replays else runs.c.replay_of.is_(None))
        if since is not None:
            query = query.where(runs.c.started_at >= since)
        if until is not None:
            query = query.where(runs.c.started_at < until)
        query = query.order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit).offset(offset)
        with self._read() as connection:
            return [RunRecord.model_validate(dict(row)) for row in connection.execute(query).mappings()]

    def mark_interrupted(self) -> int:
        """Runs still ``running`` whose process (``meta["pid"]`` on ``meta["host"]``, this host) is gone become
        ``interrupted``, with everything they stored kept. Runs of live processes or other hosts are left alone.
        A store that may only be read (a read-only file, a SELECT-only role) is left as it is, with one warning."""
        with self._read() as connection:
            running = connection.execute(sa.select(runs.c.id, runs.c.meta).where(runs.c.status == "running")).all()
        orphans = [(run_id, meta) for run_id, meta in running if is_orphaned(meta or {})]
        marked = 0
        for index, (run_id, meta) in enumerate(orphans):
            with self._db_errors("write"):
                try:
                    with self._writing(run_id) as connection:
                        # status is checked again: the run may have finished since it was read
                        result = connection.execute(
                            runs.update()
                            .where(runs.c.id == run_id, runs.c.status == "running")
                            .values(status="interrupted", error=interrupted_error(meta))
                        )
                except sa_exc.DBAPIError as error:
                    if not self._refused_as_read_only(error):
                        raise
                    # housekeeping only: a store this process may only read must still be listed and shown
                    left = len(orphans) - index
                    warnings.warn(
                        f"store {self._shown_url!r} is read-only here: {left} run(s) of processes that are gone "
                        "still show as running",
                        stacklevel=2,
                    )
                    break
            marked += result.rowcount
        return marked

    # -- registry ------------------------------------------------------------------------------------------

    def append_registry_events(self, events: Sequence[RegistryEvent]) -> None:
        rows = [self._clean({**event.model_dump(mode="json"), "at": event.at}) for event in events]
        if not rows:
            return
        try:
            with self._write() as connection:  # one transaction: an IntegrityError rolls back every row
                connection.execute(_INSERT_EVENT, rows)
        except sa_exc.IntegrityError:
            versions = [event.version for event in events]
            with self._read() as connection:
                taken = set(
                    connection.execute(
                        sa.select(registry_events.c.version).where(registry_events.c.version.in_(versions))
                    ).scalars()
                )
            # the first version stored already or given twice, as the in-memory store names it
            first = next((v for i, v in enumerate(versions) if v in taken or v in versions[:i]), versions[0])
            raise DuplicateIdError("registry version", str(first)) from None

    def registry_events(self, *, after_version: int = 0, up_to_version: int | None = None) -> list[RegistryEvent]:
        query = sa.select(*_EVENT_COLUMNS).where(registry_events.c.version > after_version)
        if up_to_version is not None:
            query = query.where(registry_events.c.version <= up_to_version)
        with self._read() as connection:
            rows = connection.execute(query.order_by(registry_events.c.version)).mappings()
            return [RegistryEvent.model_validate(dict(row)) for row in rows]

