"""The state store keeps the event loop free: a write waits for the disk in a
thread. (What a full or read-only disk does: tests/kernel/test_state_dir.py.)"""

import os
import time

import gevent

from vxlan.state import StateStore


def test_a_slow_disk_does_not_stop_the_event_loop(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def slow_fsync(fd):  # a disk that takes its time: the calling thread waits
        time.sleep(0.2)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    store = StateStore(str(tmp_path))
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    gevent.sleep(0)
    try:
        store.save("networks", "a" * 64, {"id": "a" * 64})
    finally:
        ticker.kill()
    assert len(ticks) > 5, "the event loop stood still while the record was written"
    assert os.listdir(tmp_path / "networks") == ["a" * 64 + ".json"]
