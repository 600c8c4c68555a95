"""Per-browser-session models: a user's fine-tuned recognizer and generator, never shared.

The shipped models are shared read-only by everyone; a session that switched to its fine-tuned
models gets them from here. Entries (and their temp files) go when the tab closes or, for clients
that never close one (the HTTP API), after IDLE_S unused.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field

from core import get_recognizer, get_synthesizer


@dataclass
class SessionEntry:
    recognizer: object | None = None
    synthesizer: object | None = None
    active: bool = False
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="expressionlab-"))
    last_used: float = field(default_factory=time.monotonic)
    run: int | None = None  # the fine-tune allowed to install its models; cancel and reset clear it


class SessionModels:
    IDLE_S = 3600

    def __init__(self):
        self._entries: dict[str, SessionEntry] = {}
        self._lock = threading.Lock()
        self._run_ids = itertools.count(1)  # global, so a run id is never reused by a later run
        self._cleanup_registered = False

    def entry(self, key: str) -> SessionEntry:
        with self._lock:
            if key not in self._entries:
                self._entries[key] = SessionEntry()
                if not self._cleanup_registered:  # at the first entry, not at import
                    atexit.register(self.clear)
                    self._cleanup_registered = True
            entry = self._entries[key]
            entry.last_used = time.monotonic()
        self.sweep(keep=key)
        return entry

    def sweep(self, keep: str | None = None) -> None:
        """Drop entries unused for IDLE_S. Removed under the lock (a request that touches one in
        the meantime keeps it); their files and detectors are freed outside it."""
        now = time.monotonic()
        with self._lock:
            stale = [self._entries.pop(k) for k, e in list(self._entries.items())
                     if now - e.last_used > self.IDLE_S and k != keep]
        for entry in stale:
            _free(entry)

    def start_run(self, key: str) -> int:
        """A new fine-tune of this session: only it may install models (see `set`)."""
        entry = self.entry(key)
        with self._lock:
            entry.run = next(self._run_ids)
            return entry.run

    def is_current(self, key: str, run: int) -> bool:
        """False once the run was cancelled, the session reset or a newer run started."""
        entry = self._entries.get(key)
        return entry is not None and entry.run == run

    def cancel_run(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            with self._lock:
                entry.run = None

    def set(self, key: str, recognizer, synthesizer, run: int | None = None) -> bool:
        """Install a session's models; with `run`, only if that fine-tune is still current (else False)."""
        if run is None:
            entry = self.entry(key)
        with self._lock:
            if run is not None:
                entry = self._entries.get(key)
                if entry is None or entry.run != run:
                    return False
                entry.run = None
            entry.recognizer, entry.synthesizer = recognizer, synthesizer
        return True

    def recognizer(self, key: str | None):
        self.sweep(keep=key)  # Live and Synthesize traffic also retires idle sessions
        entry = self._entries.get(key) if key else None
        if entry is not None and entry.active and entry.recognizer is not None:
            entry.last_used = time.monotonic()
            return entry.recognizer
        return get_recognizer()

    def synthesizer(self, key: str | None):
        self.sweep(keep=key)
        entry = self._entries.get(key) if key else None
        if entry is not None and entry.active and entry.synthesizer is not None:
            entry.last_used = time.monotonic()
            return entry.synthesizer
        return get_synthesizer()

    def reset(self, key: str) -> None:
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            _free(entry)

    def clear(self) -> None:
        """Free every session (at exit: temp files with fine-tuned models do not outlive the app)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            _free(entry)

    def __len__(self) -> int:
        return len(self._entries)


def _free(entry: SessionEntry) -> None:
    shutil.rmtree(entry.temp_dir, ignore_errors=True)
    detector = getattr(entry.recognizer, "_photo_detector", None)  # MediaPipe graphs hold native memory
    if detector is not None and hasattr(detector, "close"):
        detector.close()


SESSION_MODELS = SessionModels()


def session_key(request) -> str | None:
    return getattr(request, "session_hash", None)
