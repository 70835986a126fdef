"""A store in a dictionary, for tests and throwaway sessions. Behaves as the SQL store does: same errors, same
step numbering, same ordering, same JSON round trip of payloads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from orchestra.errors import DuplicateIdError, NotFoundError
from orchestra.store._common import (
    RUN_FIELDS_UPDATED_ON_FINISH,
    check_page,
    check_window,
    interrupted_error,
    is_orphaned,
    normalise_event,
    normalise_run,
    normalise_step,
    now,
    session_title,
    utf8_text,
)
from orchestra.trace import RegistryEvent, RunRecord, RunStatus, RunTrace, StepRecord

__all__ = ["InMemoryStore"]


class InMemoryStore:
    """The `Store` contract kept in memory; thread-safe. Nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, object]] = {}
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, list[StepRecord]] = {}
        self._step_ids: set[str] = set()
        self._events: dict[int, RegistryEvent] = {}

    def __repr__(self) -> str:
        return f"InMemoryStore(runs={len(self._runs)}, registry_events={len(self._events)})"

    @property
    def url(self) -> str:
        return "memory://"

    def close(self) -> None:
        """Nothing to release; present so every store can be closed alike."""

    def start_run(self, run: RunRecord) -> None:
        stored = normalise_run(run)
        with self._lock:
            if stored.id in self._runs:
                raise DuplicateIdError("run", stored.id)
            self._sessions.setdefault(stored.session_id, {"created_at": now(), "title": session_title(stored.query)})
            self._runs[stored.id] = stored
            self._steps[stored.id] = []

    def append_step(self, step: StepRecord) -> StepRecord:
        stored = normalise_step(step)
        with self._lock:
            steps = self._steps.get(stored.run_id)
            if steps is None:
                raise NotFoundError("run", stored.run_id)
            if stored.id in self._step_ids:
                raise DuplicateIdError("step", stored.id)
            seq = len(steps) + 1
            steps.append(stored.model_copy(update={"seq": seq}))
            self._step_ids.add(stored.id)
        return step.model_copy(update={"seq": seq})

    def finish_run(self, run: RunRecord) -> None:
        stored = normalise_run(run)
        with self._lock:
            current = self._runs.get(stored.id)
            if current is None:
                raise NotFoundError("run", stored.id)
            self._runs[stored.id] = current.model_copy(
                update={name: getattr(stored, name) for name in RUN_FIELDS_UPDATED_ON_FINISH}
            )

    def get_run(self, run_id: str) -> RunTrace:
        run_id = utf8_text(run_id)  # the id as it was stored
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise NotFoundError("run", run_id)
            steps = list(self._steps[run_id])
        # deep copies: a caller editing what it got must not edit the store
        return RunTrace(run=run.model_copy(deep=True), steps=[step.model_copy(deep=True) for step in steps])

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
        check_page(limit, offset)
        since, until = check_window(since, until)
        # the filters as the stored text they are compared with
        session_id, router, id_prefix = (None if text is None else utf8_text(text) for text in (session_id, router, id_prefix))
        with self._lock:
            runs = [
                run
                for run in self._runs.values()
                if (session_id is None or run.session_id == session_id)
                and (status is None or run.status == status)
                and (router is None or run.router == router)
                and (id_prefix is None or run.id.startswith(id_prefix))
                and (replays is None or (run.replay_of is not None) == replays)
                and (since is None or run.started_at >= since)
                and (until is None or run.started_at < until)
            ]
        # the SQL store's order: newest first, ties broken by id, descending
        runs.sort(key=lambda run: (run.started_at, run.id), reverse=True)
        return [run.model_copy(deep=True) for run in runs[offset : offset + limit]]

    def mark_interrupted(self) -> int:
        with self._lock:
            orphans = [run for run in self._runs.values() if run.status == "running" and is_orphaned(run.meta)]
            for run in orphans:
                update = {"status": "interrupted", "error": interrupted_error(run.meta)}
                self._runs[run.id] = run.model_copy(update=update)
        return len(orphans)

    def append_registry_events(self, events: Sequence[RegistryEvent]) -> None:
        stored = [normalise_event(event) for event in events]
        with self._lock:
            versions = [event.version for event in stored]
            for i, version in enumerate(versions):
                if version in self._events or version in versions[:i]:
                    raise DuplicateIdError("registry version", str(version))
            for event in stored:
                self._events[event.version] = event

    def registry_events(self, *, after_version: int = 0, up_to_version: int | None = None) -> list[RegistryEvent]:
        with self._lock:
            events = [
                event
                for version, event in self._events.items()
                if version > after_version and (up_to_version is None or version <= up_to_version)
            ]
        return [event.model_copy(deep=True) for event in sorted(events, key=lambda event: event.version)]
