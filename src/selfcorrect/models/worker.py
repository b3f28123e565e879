"""What the in-process engines share: decoding on one worker thread of their own, fed through
a queue under a condition, and a close that wakes the worker (which fails whatever still
waits) and waits for it to stop before the engine frees what the worker used."""

from __future__ import annotations

import threading

from selfcorrect.errors import SelfcorrectError


class WorkerEngine:
    engine_name = "the model"  # as errors name it: "the embedded model is closed"

    def _start_worker(self, thread_name: str) -> None:
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        raise NotImplementedError

    def _enqueue(self, queue, entry) -> None:
        """Hand the worker an entry of `queue`; refused once the engine is closed."""
        with self._cv:
            if self._closed:
                raise SelfcorrectError(f"{self.engine_name} is closed")
            queue.append(entry)
            self._cv.notify()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        self._thread.join()
        self._release()

    def _release(self) -> None:
        """What the engine frees once its worker has stopped."""
