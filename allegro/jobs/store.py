"""Jobs kept in an SQLite file (the standard library's ``sqlite3``, write-ahead log).

Every write is committed before the call returns (``synchronous=FULL``), so a job the
runner acknowledged survives a crash of the process or of the machine. One connection,
shared by the runner's threads under a lock: writes are a few per job, never per step.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from allegro.errors import AllegroError
from allegro.jobs.job import Job, JobState, request_from_json, request_to_json

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    position INTEGER NOT NULL,
    labels TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT '',
    video TEXT,
    error TEXT,
    warnings TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, position);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created);
"""

_COLUMNS = (
    "id, owner, request, state, position, labels, created, started, finished, attempts,"
    " cancel_requested, note, video, error, warnings"
)

# Columns a caller may change with update(); id, owner, request and created never change.
_MUTABLE = frozenset(
    {
        "state",
        "position",
        "started",
        "finished",
        "attempts",
        "cancel_requested",
        "note",
        "video",
        "error",
        "warnings",
    }
)


class JobStoreError(AllegroError):
    """The jobs database cannot be opened or is from a newer version."""


class JobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JobStoreError(
                    f"The jobs database {self.path} was written by a newer Allegro Studio "
                    f"(schema {version}, this version reads {SCHEMA_VERSION}). Update the "
                    "app, or start with another --jobs-db."
                )
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as error:
            raise JobStoreError(
                f"Cannot open the jobs database {self.path}: {error}. Check that the folder is "
                "writable, or start with another --jobs-db."
            ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def _write(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run one statement (autocommit: on disk when this returns); rows changed."""
        with self._lock:
            return self._db.execute(sql, parameters).rowcount

    def add(self, job: Job) -> None:
        self._write(
            f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * 15)})",
            (
                job.id,
                job.owner,
                request_to_json(job.request),
                job.state.value,
                job.position,
                json.dumps(job.labels, ensure_ascii=False),
                job.created,
                job.started,
                job.finished,
                job.attempts,
                int(job.cancel_requested),
                job.note,
                job.video,
                job.error,
                json.dumps(list(job.warnings), ensure_ascii=False),
            ),
        )

    def update(self, job_id: str, expect: JobState | None = None, **changes: Any) -> bool:
        """Change some columns; with ``expect``, only if the job is in that state (True if
        a row changed). That check is how a worker claims a queued job atomically."""
        unknown = set(changes) - _MUTABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        values = [_column_value(value) for value in changes.values()]
        sql = f"UPDATE jobs SET {', '.join(f'{name} = ?' for name in changes)} WHERE id = ?"
        values.append(job_id)
        if expect is not None:
            sql += " AND state = ?"
            values.append(expect.value)
        return self._write(sql, values) == 1

    def set_positions(self, positions: Mapping[str, int], expect: JobState) -> bool:
        """Move several jobs at once (all or none, and only if all are still in ``expect``)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = sum(
                    self._db.execute(
                        "UPDATE jobs SET position = ? WHERE id = ? AND state = ?",
                        (position, job_id, expect.value),
                    ).rowcount
                    for job_id, position in positions.items()
                )
                if changed != len(positions):
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute("COMMIT")
                return True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, job_id: str) -> Job | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job_from_row(rows[0]) if rows else None

    def list(
        self,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Job]:
        """Jobs in queue order (position, then submit time), or the latest finished first."""
        sql, parameters = f"SELECT {_COLUMNS} FROM jobs WHERE 1", []
        if owner is not None:
            sql += " AND owner = ?"
            parameters.append(owner)
        if states is not None:
            names = [state.value for state in states]
            sql += f" AND state IN ({', '.join('?' for _ in names)})"
            parameters.extend(names)
        sql += (
            " ORDER BY COALESCE(finished, created) DESC"
            if newest_first
            else " ORDER BY position, created"
        )
        if limit is not None:
            sql += " LIMIT ?"
            parameters.append(limit)
        return [_job_from_row(row) for row in self._query(sql, parameters)]

    def count(self, states: Iterable[JobState], owner: str | None = None) -> int:
        names = [state.value for state in states]
        sql = f"SELECT COUNT(*) FROM jobs WHERE state IN ({', '.join('?' for _ in names)})"
        if owner is not None:
            sql += " AND owner = ?"
            names.append(owner)
        return int(self._query(sql, names)[0][0])

    def next_position(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs")[0][0])


def _column_value(value: Any) -> Any:
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, tuple):  # warnings
        return json.dumps(list(value), ensure_ascii=False)
    return value


def _job_from_row(row: tuple) -> Job:
    (
        job_id,
        owner,
        request,
        state,
        position,
        labels,
        created,
        started,
        finished,
        attempts,
        cancel_requested,
        note,
        video,
        error,
        warnings,
    ) = row
    return Job(
        id=job_id,
        owner=owner,
        request=request_from_json(request),
        state=JobState(state),
        position=position,
        labels=json.loads(labels),
        created=created,
        started=started,
        finished=finished,
        attempts=attempts,
        cancel_requested=bool(cancel_requested),
        note=note,
        video=video,
        error=error,
        warnings=tuple(json.loads(warnings)),
    )
