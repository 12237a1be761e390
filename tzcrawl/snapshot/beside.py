"""A piece of a snapshot run in a thread beside the rest (the database copy waits on SQLite and the
disk while the tree waits on reading and compressing files)."""

from __future__ import annotations

import threading
import time
from typing import Callable


class Beside:
    """Start ``fn`` now; ``result()`` waits for it and returns its value or raises what it raised."""

    def __init__(self, fn: Callable[[], object], name: str):
        self.value: object = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.took = 0.0
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc
        self.took = round(time.monotonic() - self.started, 3)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def join(self) -> None:
        self._thread.join()

    def result(self):
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.value
