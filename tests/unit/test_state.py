"""The state directory: what load_all reads and what it leaves alone, and a
write that waits for the disk in a thread, not on the event loop. (What a full
or read-only disk does: tests/kernel/test_state_dir.py.)"""

import json
import os
import time

import gevent

from vxlan.state import StateStore

NET = "a" * 64


def write(path, record):
    with open(path, "w") as f:
        json.dump(record, f)


def test_stray_files_are_ignored_and_left_in_place(tmp_path):
    store = StateStore(str(tmp_path))
    store.save("networks", NET, {"id": NET, "options": {"VxlanId": "5"}})
    folder = tmp_path / "networks"
    # an editor's backup and an admin's note, both holding JSON
    for name in ("%s.json~" % NET, "notes.txt", "x.json~", "README"):
        write(folder / name, {"id": "x", "options": {"VxlanId": "6"}})
    assert list(store.load_all("networks").records) == [NET]
    assert sorted(os.listdir(folder)) == sorted(
        [NET + ".json", NET + ".json~", "notes.txt", "x.json~", "README"])


def test_records_of_an_older_format_are_read_and_a_newer_one_is_refused_and_kept(tmp_path):
    store = StateStore(str(tmp_path))
    folder = tmp_path / "networks"
    older = {"id": NET, "options": {"VxlanId": "5"}}  # as written before formats had numbers
    newer = {"format": 2, "id": "b" * 64, "options": {"VxlanId": "6"}, "more": [1]}
    write(folder / (NET + ".json"), older)
    write(folder / ("b" * 64 + ".json"), newer)
    (folder / ("c" * 64 + ".json")).write_text('{"format": 1, "id": "cc')  # cut short
    loaded = store.load_all("networks")
    assert loaded.records == {NET: older}
    assert list(loaded.newer) == ["b" * 64] and "record format 2" in loaded.newer["b" * 64]
    assert loaded.unreadable == ["c" * 64]
    assert json.loads((folder / ("b" * 64 + ".json")).read_text()) == newer
    store.save("networks", NET, older)
    assert json.loads((folder / (NET + ".json")).read_text())["format"] == 1


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
