"""A bounded background worker that renders and writes off the training thread.

A monitor computes its tensors on the training thread (copied off the device once), then hands a
``render`` job to :class:`BackgroundWriter`; the worker thread encodes PNGs and writes events while
training goes on, so the accelerator never waits for a picture. Jobs run one at a time, in the
order they were submitted (so logs appear in step order). The queue is bounded: when the worker
falls behind, :meth:`BackgroundWriter.submit` waits instead of piling up memory.

A job that fails is not lost: its exception is kept and raised (as :class:`RenderError`, with the
job's name and the original traceback chained) by the next :meth:`submit`, :meth:`flush` or
:meth:`close`, i.e. on the monitor's next hook.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Optional

from lightning_xai._validation import check_int
from lightning_xai.errors import LightningXAIError

__all__ = ["BackgroundWriter", "RenderError"]


class RenderError(LightningXAIError):
    """A background render/write job failed; raised on the next call into the writer."""


_STOP = object()


class BackgroundWriter:
    """Run render/write jobs on one daemon thread, in submission order, with a bounded queue.

    Args:
        max_pending: Most jobs waiting at once; ``submit`` blocks while the queue is full.
        name: Thread name (shows in debuggers and ``py-spy``).
        synchronous: Run every job immediately on the caller's thread (for debugging, or where
            threads are unwelcome). Errors are still raised as :class:`RenderError`.

    Examples:
        >>> done = []
        >>> writer = BackgroundWriter()
        >>> writer.submit(lambda: done.append(1), name="job")
        >>> writer.flush()
        >>> done
        [1]
        >>> writer.close()
    """

    def __init__(self, max_pending: int = 4, name: str = "lightning-xai-writer", synchronous: bool = False) -> None:
        check_int("max_pending", max_pending, 1)
        self.max_pending = max_pending
        self.name = name
        self.synchronous = synchronous
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[tuple[str, BaseException]] = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        # Picklable (ddp_spawn pickles the callbacks): only the configuration travels.
        return {"max_pending": self.max_pending, "name": self.name, "synchronous": self.synchronous}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state)  # type: ignore[misc, arg-type]

    # -- worker --------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                job_name, fn = item  # type: ignore[misc]
                self._execute(job_name, fn)
            finally:
                self._queue.task_done()

    def _execute(self, job_name: str, fn: Callable[[], None]) -> None:
        if self._error is not None:  # after a failure, later jobs are dropped until it is reported
            return
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - kept and re-raised on the caller's thread
            with self._lock:
                if self._error is None:
                    self._error = (job_name, err)

    def _raise_pending(self) -> None:
        with self._lock:
            pending, self._error = self._error, None
        if pending is not None:
            job_name, err = pending
            raise RenderError(f"Background job {job_name!r} failed: {type(err).__name__}: {err}") from err

    # -- public API ----------------------------------------------------------------------------
    def submit(self, fn: Callable[[], None], name: str = "render") -> None:
        """Queue ``fn()`` (blocks while ``max_pending`` jobs wait).

        Raises:
            RenderError: an earlier job failed (reported once).
        """
        self._raise_pending()
        if self.synchronous:
            self._execute(name, fn)
            self._raise_pending()
            return
        self._ensure_thread()
        self._queue.put((name, fn))

    def flush(self) -> None:
        """Wait until every queued job has run.

        Raises:
            RenderError: a job failed (reported once).
        """
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()
        self._raise_pending()

    def close(self) -> None:
        """Flush, then stop the worker thread (a later :meth:`submit` starts a new one).

        Raises:
            RenderError: a job failed (reported once; the thread is stopped all the same).
        """
        try:
            self.flush()
        finally:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._queue.put(_STOP)
                thread.join()

    @property
    def pending(self) -> int:
        """Jobs queued and not yet finished (approximate)."""
        return self._queue.unfinished_tasks
