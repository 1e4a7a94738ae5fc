"""Group commit: the threads of one process that append at the same time share one transaction.

Appends to the chain are serialized (the chain head is locked for the
transaction), so with one commit per record every thread waits for every
other thread's synced commit. Here a caller queues its job; if no group is
being written, it becomes the leader, takes every queued job (at most
``limit``) and writes them with one call of ``write`` (one transaction, one
commit); the callers that queued meanwhile form the next group. Nobody
waits on purpose for company: an idle process writes a group of one at
once. A caller gets its outcome only once ``write`` has returned, i.e.
after the transaction holding its record committed, or the error ``write``
gave its job. Knows nothing of databases: the store supplies ``write``.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

Job = TypeVar("Job")
#: what ``write`` answers per job, in the batch's order: its result, or the exception its caller raises
Outcome = int | BaseException

DEFAULT_LIMIT = 64


class _Slot(Generic[Job]):
    __slots__ = ("job", "done", "outcome")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.done = False
        self.outcome: Outcome = 0


class GroupCommit(Generic[Job]):
    """Share one per writer object (one AuditStore); thread-safe."""

    def __init__(self, write: Callable[[list[Job]], list[Outcome]], *, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("a group holds at least one job")
        self._write = write
        self.limit = limit
        self._reset()
        ref = weakref.ref(self)

        def _after_fork() -> None:
            # A forked child has only the forking thread: whatever the parent had queued is not its own.
            alive = ref()
            if alive is not None:
                alive._reset()

        os.register_at_fork(after_in_child=_after_fork)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Slot[Job]] = []
        self._writing = False

    @property
    def queued(self) -> int:
        """Jobs waiting for the next group (not the one being written)."""
        with self._cond:
            return len(self._queue)

    def submit(self, job: Job) -> Outcome:
        """Write ``job`` in the next group; once done, its result, or the error its caller raises."""
        slot = _Slot(job)
        cond = self._cond
        with cond:
            self._queue.append(slot)
        # Bounded: each pass either finds the slot done or writes a group holding the oldest
        # queued jobs, and the queue ahead of this slot only shrinks.
        while True:
            with cond:
                while not slot.done and self._writing:
                    cond.wait()
                if slot.done:
                    break
                self._writing = True
                group = self._queue[:self.limit]
                del self._queue[:self.limit]
            outcomes: list[Outcome] = []
            try:
                outcomes = self._run(group)
            finally:
                with cond:
                    for i, member in enumerate(group):
                        # A leader interrupted mid-write (outcomes short) releases nobody as written.
                        member.outcome = outcomes[i] if i < len(outcomes) else RuntimeError("the group was not written")
                        member.done = True
                    self._writing = False
                    cond.notify_all()
        return slot.outcome

    def _run(self, group: list[_Slot[Job]]) -> list[Outcome]:
        try:
            outcomes = self._write([member.job for member in group])
        except Exception as exc:  # noqa: BLE001 - nobody in the group may be released as written
            return [exc] * len(group)
        if len(outcomes) != len(group):
            error = RuntimeError("group write answered for a different number of jobs")
            return [error] * len(group)
        return outcomes
