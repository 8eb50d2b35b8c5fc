"""Custom extraction engines for tests/test_engines.py ("module:function" engine specs)."""

import os
import signal
import time


def echo(html: str, url: str | None) -> str:
    return html


def slow(html: str, url: str | None) -> str:
    time.sleep(30)
    return html


def busy(html: str, url: str | None) -> str:
    """Slow pure-Python loop: the child's own soft alarm can stop it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pass
    return html


def crash(html: str, url: str | None) -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return html


def boom(html: str, url: str | None) -> str:
    raise ValueError("bad page")


def by_content(html: str, url: str | None) -> str | None:
    """Behaves as the page says: lets one batch mix slow, crashing and good documents."""
    if html == "slow":
        return slow(html, url)
    if html == "crash":
        return crash(html, url)
    if html == "boom":
        return boom(html, url)
    if html == "none":
        return None
    return html


def not_str(html: str, url: str | None) -> int:
    return 42


NOT_CALLABLE = 3


def stuck(html: str, url: str | None) -> str:
    """Deaf to the child's alarm, like a long lxml call in C: only the parent's kill ends it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(30)
    return html


def hog(html: str, url: str | None) -> str:
    """Asks for 2 GiB at once: over the child's memory limit in the tests."""
    block = bytearray(2 << 30)
    return html + str(len(block))
