"""Behaviour both stores share, so the SQL store and the in-memory store cannot drift apart."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigurationError
from orchestra.trace import RegistryEvent, RunRecord, StepRecord

__all__ = [
    "RUN_FIELDS_UPDATED_ON_FINISH",
    "check_page",
    "check_window",
    "interrupted_error",
    "is_orphaned",
    "mask_url",
    "normalise_event",
    "normalise_run",
    "normalise_step",
    "now",
    "session_title",
    "url_password",
    "utc",
    "utf8_json_value",
    "utf8_text",
]

RUN_FIELDS_UPDATED_ON_FINISH = (
    "router",
    "status",
    "answer",
    "error",
    "registry_version",
    "finished_at",
    "replay_of",
    "replay_mode",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "meta",
)
"""What `finish_run` overwrites: everything but the run's identity (id, session, query, start time)."""

_TITLE_CHARS = 120
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^/\s]*)(?P<tail>@)")
"""Greedy up to the last '@' before the path: a password written with an unencoded '@' is masked whole."""


def utc(value: datetime | None) -> datetime | None:
    """The same instant in UTC; a naive time is taken to be UTC already (what `datetime.utcnow` gives)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def mask_url(url: object) -> str:
    """The URL as it may be shown or logged: any password replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", str(url))


def url_password(url: object) -> str | None:
    """The password as `mask_url` finds it (up to the authority's last '@'), for scrubbing it from messages."""
    match = _PASSWORD_IN_URL.search(str(url))
    return match["password"] if match else None


MAX_PAGE = 2**63 - 1
"""The largest limit or offset: SQL takes a signed 64-bit integer there."""


def check_page(limit: int, offset: int) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if not 0 <= value <= MAX_PAGE:
            raise ConfigurationError(f"list_runs: field {name!r} must be from 0 to {MAX_PAGE}, got {value}")


def check_window(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """``list_runs``'s time window in UTC (a naive time is UTC already, as `utc` takes it); a value that is no
    `datetime` is a `ConfigurationError` naming its field."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and not isinstance(value, datetime):
            raise ConfigurationError(f"list_runs: field {name!r} must be a datetime, got {type(value).__name__} {value!r:.60}")
    return utc(since), utc(until)


def session_title(query: str) -> str:
    """A session is titled by its first query, cut short for listings."""
    line = " ".join(query.split())
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1] + "…"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # the process exists but belongs to another user
        return True
    except OSError:
        return False
    # a zombie child still "exists": ask the kernel for its state
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def is_orphaned(meta: dict[str, Any]) -> bool:
    """True when the run was started on this host by a process that is gone.

    A run without ``meta["pid"]``/``meta["host"]`` or from another host is never judged: only its own host
    can tell whether the process lives."""
    pid, host = meta.get("pid"), meta.get("host")
    if host != socket.gethostname() or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    return not pid_alive(pid)


def interrupted_error(meta: dict[str, Any]) -> dict[str, str]:
    """The error recorded on a run found orphaned by `mark_interrupted`."""
    return {
        "type": "Interrupted",
        "code": "interrupted",
        "message": f"process {meta.get('pid')} on {meta.get('host')} ended before the run finished",
    }


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_text(text: str) -> str:
    """``text`` with each lone surrogate (``"\\ud800"``) as U+FFFD, and a surrogate pair as its character."""
    # UTF-8 cannot encode a surrogate, so SQLite's driver, PostgreSQL's text and JSONB all refuse one: a garbage
    # model answer or query must not make its trace unstorable
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def utf8_json_value(value: Any) -> Any:
    """``value`` (JSON-like) with `utf8_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, dict):
        return {utf8_json_value(key): utf8_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [utf8_json_value(item) for item in value]
    return value


# JSON columns hold what `model_dump(mode="json")` gives, so both stores accept and return the same values
# (tuples come back as lists, datetimes inside payloads as ISO strings) and times are UTC. Text is cleaned as the
# SQL store must clean it (`utf8_text`), so a lone surrogate comes back as U+FFFD from every store.


def normalise_run(run: RunRecord) -> RunRecord:
    data = utf8_json_value(run.model_dump(mode="json"))
    data["started_at"], data["finished_at"] = utc(run.started_at), utc(run.finished_at)
    return RunRecord.model_validate(data)


def normalise_step(step: StepRecord) -> StepRecord:
    data = utf8_json_value(step.model_dump(mode="json"))
    data["created_at"] = utc(step.created_at)
    return StepRecord.model_validate(data)


def normalise_event(event: RegistryEvent) -> RegistryEvent:
    data = utf8_json_value(event.model_dump(mode="json"))
    data["at"] = utc(event.at)
    return RegistryEvent.model_validate(data)


def now() -> datetime:
    return datetime.now(UTC)
