"""Per-browser-session models: a user's fine-tuned recognizer and generator, never shared.

The shipped models are shared read-only by everyone; a session that switched to its fine-tuned
models gets them from here. Entries (and their temp files) go when the tab closes.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field

from core import get_recognizer, get_synthesizer


@dataclass
class SessionEntry:
    recognizer: object | None = None
    synthesizer: object | None = None
    active: bool = False
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="expressionlab-"))


class SessionModels:
    def __init__(self):
        self._entries: dict[str, SessionEntry] = {}
        self._lock = threading.Lock()

    def entry(self, key: str) -> SessionEntry:
        with self._lock:
            if key not in self._entries:
                self._entries[key] = SessionEntry()
            return self._entries[key]

    def set(self, key: str, recognizer, synthesizer) -> None:
        entry = self.entry(key)
        entry.recognizer, entry.synthesizer = recognizer, synthesizer

    def recognizer(self, key: str | None):
        entry = self._entries.get(key) if key else None
        if entry is not None and entry.active and entry.recognizer is not None:
            return entry.recognizer
        return get_recognizer()

    def synthesizer(self, key: str | None):
        entry = self._entries.get(key) if key else None
        if entry is not None and entry.active and entry.synthesizer is not None:
            return entry.synthesizer
        return get_synthesizer()

    def reset(self, key: str) -> None:
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            shutil.rmtree(entry.temp_dir, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._entries)


SESSION_MODELS = SessionModels()


def session_key(request) -> str | None:
    return getattr(request, "session_hash", None)
