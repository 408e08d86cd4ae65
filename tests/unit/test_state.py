"""The state directory: what load_all reads, and what it leaves alone."""

import json
import os

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
