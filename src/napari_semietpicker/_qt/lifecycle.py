"""How a dock ends: the viewer events it connected are disconnected and its background job is
stopped and waited for, whether the dock is closed, removed from napari's dock area (its x
button) or its viewer window closes.

napari's x button does not close a dock's widget: it takes it out of the dock area
(``setParent(None)``). :class:`DockLifecycle` therefore watches the widget's parents with
public Qt events (``ParentChange``, ``Close``) and no private napari attribute: the widget
leaving its dock, or the main window above it closing, ends the dock once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from napari.qt.threading import create_worker
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QMainWindow, QWidget

#: How long closing waits for a job to finish its step and save (a slow CPU step).
CLOSE_WAIT_S = 300.0


class DockLifecycle(QObject):
    """Connections a dock made, undone (and ``on_close`` run) once when the dock goes away."""

    def __init__(self, widget: QWidget, on_close: Callable[[], None]) -> None:
        super().__init__(widget)
        self._widget = widget
        self._on_close = on_close
        self._links: list[tuple[Any, Callable]] = []
        self._watched: list[QWidget] = []
        self._was_docked = False
        self.closed = False
        widget.installEventFilter(self)
        self._follow_parents()

    def connect(self, emitter: Any, callback: Callable) -> None:
        """Connect ``callback`` to a napari or psygnal event; disconnected when the dock ends."""
        emitter.connect(callback)
        self._links.append((emitter, callback))

    def eventFilter(self, watched: QObject | None, event: QEvent | None  # noqa: N802 (Qt API)
                    ) -> bool:
        if event is None:
            return False
        kind = event.type()
        if kind == QEvent.Type.ParentChange:
            if watched is self._widget and self._widget.parentWidget() is None \
                    and self._was_docked:
                self.close()  # taken out of its dock (napari's x button)
            else:
                self._follow_parents()
        elif kind == QEvent.Type.Close and (watched is self._widget
                                       or isinstance(watched, QMainWindow)):
            self.close()
        return False

    def close(self) -> None:
        """End the dock: run ``on_close``, then disconnect everything it connected."""
        if self.closed:
            return
        self.closed = True
        try:
            self._on_close()
        finally:
            for emitter, callback in self._links:
                try:
                    emitter.disconnect(callback)
                except (RuntimeError, TypeError, ValueError):
                    pass  # already gone with its layer
            self._links.clear()
            for widget in self._watched:
                widget.removeEventFilter(self)
            self._watched.clear()

    def _follow_parents(self) -> None:
        """Watch every ancestor: a dock widget moved into the main window is seen arriving."""
        for widget in self._watched:
            widget.removeEventFilter(self)
        self._watched.clear()
        parent = self._widget.parentWidget()
        self._was_docked = self._was_docked or parent is not None
        while parent is not None:
            parent.installEventFilter(self)
            self._watched.append(parent)
            parent = parent.parentWidget()


class BackgroundJob:
    """A function run in a napari worker thread with a stop flag and a way to wait for it.

    The function is called as ``function(*args, should_stop)``; ``stop_and_wait`` (for
    closing) sets the flag, drops the result handlers and waits for the function to return,
    so that nothing runs on when the viewer is gone.
    """

    #: Jobs whose function has not returned, in this process (a closed dock's job included).
    unfinished: ClassVar[set[BackgroundJob]] = set()

    def __init__(self, kind: str, function: Callable[..., Any], *args: Any,
                 on_returned: Callable[[Any], None], on_error: Callable[[Exception], None],
                 on_finished: Callable[[], None]) -> None:
        self.kind = kind
        self.stop_flag = threading.Event()
        self.done = threading.Event()
        BackgroundJob.unfinished.add(self)

        def run() -> Any:
            try:
                return function(*args, self.stop_flag.is_set)
            finally:
                BackgroundJob.unfinished.discard(self)
                self.done.set()

        self.worker = create_worker(run, _connect={"returned": on_returned,
                                                   "errored": on_error,
                                                   "finished": on_finished})

    @classmethod
    def running(cls, kind: str) -> bool:
        """Whether a job of this kind still runs in this process."""
        return any(job.kind == kind for job in cls.unfinished)

    def stop(self) -> None:
        self.stop_flag.set()

    def stop_and_wait(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Stop, disconnect the result handlers and wait; True when the function returned."""
        self.stop_flag.set()
        for signal in (self.worker.returned, self.worker.errored, self.worker.finished):
            try:
                signal.disconnect()
            except (RuntimeError, TypeError):
                pass
        return self.done.wait(timeout_s)
