"""A run is a directory; each stage writes its artifacts into ``<run>/<stage>/`` with a manifest.

The manifest holds a fingerprint of the stage's settings and of its upstream stages'
fingerprints. Re-running skips a stage whose fingerprint is unchanged; a changed setting changes
the fingerprint of that stage and of every stage downstream of it, and only those recompute.
A stage is built in a temp folder and renamed into place with its manifest already inside, so a
killed run never leaves a stage folder that a re-run would trust; a stage whose teacher requests
partly failed (``requests_failed`` in its info) is kept under a fingerprint of its own, so the
next run recomputes it (retrying only those requests) and whatever was built on it. Long stages
(training) get a ``work`` folder keyed by the fingerprint that survives a crash, for checkpoints
to resume from. A stage is checked and computed under a lock (``.locks/<stage>.lock``), so two
invocations on one run folder never compute the same stage twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import read_json, write_json

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per run folder
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
STAGE_FORMAT = 1  # bump when the on-disk format of stages changes


def fingerprint(obj: Any) -> str:
    """A stable hash of any JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class StageResult:
    name: str
    path: Path
    fingerprint: str
    manifest: dict[str, Any]
    skipped: bool  # True when this run reused an earlier result

    @property
    def info(self) -> dict[str, Any]:
        return self.manifest.get("info", {})

    @property
    def wall_s(self) -> float:
        return float(self.manifest.get("wall_s", 0.0))


@dataclass
class StageContext:
    """What a stage function gets: where to write (``out``) and a crash-surviving ``work`` dir."""

    name: str
    out: Path
    work: Path
    deps: dict[str, StageResult] = field(default_factory=dict)


StageFn = Callable[[StageContext], dict[str, Any] | None]


class RunDir:
    def __init__(self, root: str | os.PathLike, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, StageResult] = {}
        self.log = log or (lambda msg: None)

    def path(self, name: str) -> Path:
        return self.root / name

    def stage(
        self,
        name: str,
        settings: Any,
        fn: StageFn,
        deps: Sequence[StageResult] = (),
    ) -> StageResult:
        """Run ``fn`` unless ``<run>/<name>`` already holds a result with the same fingerprint."""
        fp = fingerprint(
            {"stage": name, "format": STAGE_FORMAT, "settings": settings,
             "deps": {d.name: d.fingerprint for d in deps}}
        )
        done = self.results.get(name)
        if done is not None and done.manifest.get("partial_of", done.fingerprint) == fp:
            return done  # already run or reused by this invocation (shared by several methods)
        with self._locked(name):
            return self._reuse_or_compute(name, fp, settings, fn, deps)

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold ``<run>/.locks/<name>`` while the stage is checked and computed: a second
        invocation on this run folder that asks for the stage meanwhile waits, then finds it
        done and reuses it (instead of computing it again and racing to rename it in)."""
        if fcntl is None:
            yield
            return
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{name}.lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(f"[wait] {name} (another process is computing it)")
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _reuse_or_compute(self, name: str, fp: str, settings: Any, fn: StageFn,
                          deps: Sequence[StageResult]) -> StageResult:
        final = self.root / name
        manifest_path = final / MANIFEST
        if manifest_path.exists():
            try:
                manifest = read_json(manifest_path)
            except Exception:  # a corrupt manifest is not trusted
                manifest = {}
            if manifest.get("fingerprint") == fp:
                self.log(f"[skip] {name} (unchanged)")
                res = StageResult(name, final, fp, manifest, skipped=True)
                self.results[name] = res
                return res
        self.log(f"[run ] {name}")
        work = self.root / ".work" / f"{name}-{fp[:12]}"
        tmp = self.root / f".tmp-{name}-{fp[:12]}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        ctx = StageContext(name=name, out=tmp, work=work, deps={d.name: d for d in deps})
        started = time.time()
        try:
            info = fn(ctx) or {}
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        partial = {}
        if info.get("requests_failed"):  # teacher requests failed: the next run recomputes it,
            # and what was built on this partial result too (a fingerprint of its own)
            partial = {"partial_of": fp}
            fp = fingerprint({"partial_of": fp, "failed": info.get("failed_digest")})
        manifest = {
            "stage": name,
            "fingerprint": fp,
            **partial,
            "settings": settings,
            "deps": {d.name: d.fingerprint for d in deps},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_s": round(time.time() - started, 3),
            "info": info,
        }
        write_json(tmp / MANIFEST, json.loads(json.dumps(manifest, default=str)))
        old = self.root / f".old-{name}"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        res = StageResult(name, final, fp, manifest, skipped=False)
        self.results[name] = res
        return res
