"""The one way the tests and the harness wait for something: poll a check until
it returns something true, or give up after a bound with what was last seen.

Every wait is bounded (a test never hangs) and every timeout says what was
awaited, for how long, and the last value the check returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A wait ran out of time; pytest reports it as a failed assertion."""


def until(
    what: str,
    check: Callable[[], T],
    timeout: float,
    interval: float = 0.5,
    *,
    ignore: tuple[type[BaseException], ...] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    detail: Callable[[], str] | None = None,
) -> T:
    """Return the first true value of ``check()``, called every ``interval`` s.

    An exception of a type in ``ignore`` counts as a false result (and is what
    the timeout message shows as last seen). After ``timeout`` s, raise
    WaitTimeout naming ``what`` and the last result; ``detail()`` adds context
    (a log's tail) to that message.
    """
    deadline = clock() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        if clock() >= deadline:
            break
        sleep(interval)
    message = f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
    if detail is not None:
        message += "\n" + detail()
    raise WaitTimeout(message)
