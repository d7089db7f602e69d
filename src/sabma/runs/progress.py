"""Resumable evaluations over many sets (corruptions, OOD sets): the sets finished so far."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sabma.runs.files import atomic_write_json

log = logging.getLogger(__name__)


class SetProgress:
    """The sets of an evaluation (shift, OOD) finished so far, in a JSON file next to the run's
    metrics (written atomically after every set, removed by :meth:`finish`). ``identity``
    names what was evaluated (e.g. a hash of the posterior's file): saved sets of another
    posterior or other settings are never reused. One slot per run: a call with other
    settings starts afresh and overwrites it."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path = path
        self.identity = identity

    def start(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The saved sets if they were measured with ``settings`` on the same posterior."""
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict):
            return {}
        if saved.get("identity") != self.identity or saved.get("settings") != settings:
            return {}
        sets: dict[str, Any] = saved.get("sets", {})
        names = set(settings["predictives"])
        if not isinstance(sets, dict) or any(
            not isinstance(v, dict) or set(v) != names for v in sets.values()
        ):
            return {}
        if sets:
            log.info("resuming %s (%d sets already measured)", self.path, len(sets))
        return dict(sets)

    def save(self, settings: dict[str, Any], sets: dict[str, Any]) -> None:
        payload = {"identity": self.identity, "settings": settings, "sets": sets}
        atomic_write_json(self.path, payload)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)
