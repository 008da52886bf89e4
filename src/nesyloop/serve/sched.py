"""The backend scheduler of ``nesyloop serve``: one worker thread owns the backend.

Jobs (one API call each) run in arrival order on the worker, so backend calls never overlap
(local models are not thread-safe). With ``merge_limit`` > 1 (a student: its batch size), the
greedy jobs waiting together with the same settings and costs within ``small_ratio`` of each
other run as one ``generate`` call, batched as a pipeline run batches; sampled jobs always run
alone, so that a seed reproduces their answer. A student's model is wrapped
(:class:`HookedModel`) so that the worker gets control back after every generated token; there
it

* stops the running generation when its time limit has passed (the job is marked
  ``timed_out``: the server answers with what was generated, finish_reason "length"), and
* runs the waiting *small* jobs (cost at most ``1 / small_ratio`` of the running one's) right
  there, nested inside the large one, so that short requests keep answering while a long one
  generates. The jobs waiting at that moment run, then the large one generates for at least as
  long as they took before the next nesting, so it keeps half the time however many small
  requests come. A nested job does not nest others, and runs under its own fork of the RNG, so
  the large job samples the same tokens as it would alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .wire import ApiError


class Job:
    """One API call's backend requests and its cost (prompt + max new tokens, all samples)."""

    def __init__(self, requests: list[Any], cost: int, limit_s: float | None):
        self.requests, self.cost, self.limit_s = list(requests), max(1, int(cost)), limit_s
        self.members: list[Job] = [self]  # the calls a merged job answers
        self.deadline: float | None = None
        self.timed_out = False
        self.result: list[Any] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    @property
    def greedy(self) -> bool:
        return all(r.settings.temperature == 0 for r in self.requests)

    def merges_with(self, other: Job, ratio: float) -> bool:
        """Whether the two can run as one batch: both greedy, the same settings (one batch of
        the backend), and costs within ``ratio`` of each other (a short call must not wait
        for a long one)."""
        settings = {r.settings for r in self.requests + other.requests}
        return (self.greedy and other.greedy and len(settings) == 1
                and max(self.cost, other.cost) < ratio * min(self.cost, other.cost))


class Scheduler:
    """Run ``generate`` on one worker thread (see the module docstring). ``merge_limit``: up to
    this many greedy requests waiting together run as one ``generate`` call (1: never)."""

    def __init__(self, generate: Callable[[list[Any]], list[Any]], merge_limit: int = 1,
                 small_ratio: float = 4.0):
        self.generate, self.merge_limit, self.small_ratio = generate, merge_limit, small_ratio
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._running: list[Job] = []  # outermost first; only the worker touches it
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._next_nest = 0.0  # monotonic time before which the outer job is not interrupted
        self.nested_runs = 0  # how many calls ran nested inside a larger one
        self.merged_runs = 0  # how many calls ran merged with others

    def start(self, name: str = "nesyloop-serve-worker") -> None:
        with self._cv:
            if self._thread is None:
                self._stopped = False
                self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop the worker; jobs still queued fail with a 503."""
        with self._cv:
            self._stopped = True
            left = list(self._queue)
            self._queue.clear()
            self._cv.notify_all()
            thread, self._thread = self._thread, None
        for job in left:
            job.error = ApiError(503, "the server is shutting down", "server_error",
                                 "server_shutting_down")
            job.done.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def run(self, requests: list[Any], cost: int, limit_s: float | None) -> Job:
        """Queue the requests and wait until they have run (an error is in ``job.error``)."""
        job = Job(requests, cost, limit_s)
        with self._cv:
            if self._stopped or self._thread is None:
                raise ApiError(503, "the server is not running", "server_error",
                               "server_shutting_down")
            self._queue.append(job)
            self._cv.notify()
        job.done.wait()
        return job

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        return bool(self._running)

    @property
    def is_worker(self) -> bool:
        t = self._thread
        return t is not None and threading.get_ident() == t.ident

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                group = self._take_group()
            self._execute(self._merged(group))

    def _take_group(self) -> list[Job]:
        """The first waiting job, and the waiting greedy jobs that can merge with it (up to
        ``merge_limit`` requests in all); the caller holds ``_cv``."""
        group = [self._queue.popleft()]
        size = len(group[0].requests)
        if group[0].greedy and self.merge_limit > 1:
            for job in list(self._queue):
                if (group[0].merges_with(job, self.small_ratio)
                        and size + len(job.requests) <= self.merge_limit):
                    self._queue.remove(job)
                    group.append(job)
                    size += len(job.requests)
        return group

    def _take_small(self, cost: int) -> list[Job]:
        """Take the waiting jobs small enough to nest in a job of ``cost``."""
        with self._cv:
            small = [j for j in self._queue if j.cost * self.small_ratio <= cost]
            for job in small:
                self._queue.remove(job)
        return small

    def _merged(self, group: list[Job]) -> Job:
        if len(group) == 1:
            return group[0]
        self.merged_runs += len(group)
        job = Job([r for j in group for r in j.requests], sum(j.cost for j in group),
                  group[0].limit_s)
        job.members = group
        return job

    def _execute(self, job: Job) -> None:
        if not self._running:
            self._next_nest = 0.0
        job.deadline = None if job.limit_s is None else time.monotonic() + job.limit_s
        self._running.append(job)
        try:
            job.result = list(self.generate(job.requests))
        except BaseException as err:  # handed to the waiting request threads
            job.error = err
        finally:
            self._running.pop()
            self._finish(job)

    @staticmethod
    def _finish(job: Job) -> None:
        at = 0
        for member in job.members:
            n = len(member.requests)
            if job.result is not None and member is not job:
                member.result = job.result[at:at + n]
            at += n
            member.error = member.error if member is job else job.error
            member.timed_out = job.timed_out
            member.done.set()

    def _nest(self, outer: Job, rng_guard: Callable[[], Any]) -> None:
        now = time.monotonic()
        if now < self._next_nest:
            return
        small = self._take_small(outer.cost)
        groups: list[list[Job]] = []
        for job in small:  # merge greedy alike ones up to merge_limit requests
            last = groups[-1] if groups else None
            if (last is not None and last[0].merges_with(job, self.small_ratio) and sum(
                    len(j.requests) for j in last) + len(job.requests) <= self.merge_limit):
                last.append(job)
            else:
                groups.append([job])
        for group in groups:
            merged = self._merged(group)
            self.nested_runs += len(group)
            with rng_guard():
                self._execute(merged)
        end = time.monotonic()
        self._next_nest = end + (end - now)  # the outer job's turn: as long as theirs

    def tick(self, rng_guard: Callable[[], Any] = contextlib.nullcontext) -> bool:
        """Called after every generated token: run waiting small jobs (outermost job only),
        then say whether the current generation must stop (its time is up)."""
        if not self.is_worker or not self._running:
            return False
        if len(self._running) == 1:
            self._nest(self._running[0], rng_guard)
        job = self._running[-1]
        if job.deadline is not None and time.monotonic() > job.deadline:
            job.timed_out = True
            return True
        return False


class HookedModel:
    """A transformers model whose decoding calls ``Scheduler.tick`` after every token (a
    stopping criterion that stops on the time limit): ``generate`` gets it added, and
    nesyloop's own greedy loop (:func:`nesyloop.gen.hf.greedy_dropping`) asks for it with
    ``tick_criteria``. Everything else passes through."""

    def __init__(self, lm: Any, scheduler: Scheduler):
        self.__dict__["_lm"] = lm
        self.__dict__["_scheduler"] = scheduler

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_lm"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_lm"], name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._lm(*args, **kwargs)

    def _rng_guard(self):
        import torch

        dev = getattr(self._lm, "device", None)
        return torch.random.fork_rng(devices=[dev] if getattr(dev, "type", "") == "cuda" else [])

    def tick_criteria(self) -> list[Any]:
        """The stopping criteria to add to a decoding loop: one that ticks the scheduler."""
        import torch
        from transformers import StoppingCriteria

        scheduler, guard = self._scheduler, self._rng_guard

        class Tick(StoppingCriteria):
            def __call__(self, input_ids, scores=None, **kw):
                stop = scheduler.tick(guard)
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool,
                                  device=input_ids.device)

        return [Tick()]

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList(kwargs.get("stopping_criteria") or [])
        criteria.extend(self.tick_criteria())
        kwargs["stopping_criteria"] = criteria
        return self._lm.generate(*args, **kwargs)


def hf_of(backend: Any) -> Any | None:
    """The object holding a student's transformers model (``.lm``) in ``backend``, if any."""
    for obj in (backend, getattr(backend, "student", None)):
        lm = getattr(obj, "lm", None) if obj is not None else None
        if lm is not None and callable(getattr(lm, "generate", None)):
            return obj
    return None


def hook(backend: Any, scheduler: Scheduler) -> Callable[[], None]:
    """Wrap the backend's model for ``scheduler``; returns the function that unwraps it."""
    holder = hf_of(backend)
    if holder is None or isinstance(holder.lm, HookedModel):
        return lambda: None
    original = holder.lm
    holder.lm = HookedModel(original, scheduler)

    def unhook() -> None:
        if isinstance(getattr(holder, "lm", None), HookedModel):
            holder.lm = original

    return unhook
