"""A search written once as steps, carried out by a sync driver or an async one.

The searchers' logic (which version to read, what to encode, what to ask each leg, how to fuse, what to
fetch for a page) is a generator that yields what it needs done, a backend read or some CPU work, and
receives the result (or the error, raised where it yielded). ``run`` does each step in the calling thread;
``run_async`` awaits a backend's coroutine, and hands a sync backend's reads and all CPU work to a
bounded thread pool, so an event loop never waits on numpy, ONNX or a socket. Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Read:
    """A read from the backend: the name of its method (``snapshot``, ``retrieve``, ``sources`` ...) and the
    arguments; a sync or an async backend answers it alike."""

    method: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Compute:
    """CPU work (loading an encoder, encoding queries): never on an event loop's thread."""

    work: Callable[[], Any]


Step = Read | Compute
Steps = Generator[Step, Any, T]
"""A computation that yields the steps it needs and returns its result."""


def run(steps: Steps[T], backend: object) -> T:
    """Carry out ``steps`` in this thread, against a sync ``backend``."""
    answer: Any = None
    failure: Exception | None = None
    while True:
        try:
            step = steps.send(answer) if failure is None else steps.throw(failure)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            answer, failure = (step.work() if isinstance(step, Compute)
                               else getattr(backend, step.method)(*step.args)), None
        except Exception as error:  # handed to the steps, which catch what they expect and re-raise the rest
            answer, failure = None, error


async def run_async(steps: Steps[T], backend: object, pool: Executor) -> T:
    """Carry out ``steps`` without blocking the running loop: a coroutine read is awaited; a sync read and
    all CPU work run in ``pool``."""
    loop = asyncio.get_running_loop()
    answer: Any = None
    failure: Exception | None = None
    while True:
        try:
            step = steps.send(answer) if failure is None else steps.throw(failure)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            if isinstance(step, Compute):
                answer = await loop.run_in_executor(pool, partial(_no_stop, step.work))
            else:
                method = getattr(backend, step.method)
                answer = (await method(*step.args) if inspect.iscoroutinefunction(method)
                          else await loop.run_in_executor(pool, partial(_no_stop, partial(method, *step.args))))
            failure = None
        except Exception as error:  # not CancelledError (a BaseException): a cancelled request just stops
            answer, failure = None, error


def _no_stop(work: Callable[[], T]) -> T:
    """``work()``, with a StopIteration it lets out (a ``next()`` on an empty iterator) as a RuntimeError: a
    future cannot hold a StopIteration, and the coroutine awaiting it would wait forever."""
    try:
        return work()
    except StopIteration as error:
        raise RuntimeError(f"{work} raised StopIteration") from error
