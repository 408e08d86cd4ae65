"""Waiting in tests: poll until something holds, or fail saying what did not."""

import time


def wait_for(predicate, seconds=10, what="the condition", interval=0.1):
    """Polls PREDICATE until it returns something true, and returns that; fails
    the test after SECONDS, naming WHAT it waited for."""
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        time.sleep(interval)
