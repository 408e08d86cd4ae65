"""What can happen to the plugin's state directory behind its back, for the
kernel and the e2e tests: each takes the directory (--state-dir)."""

import os
import shutil

KINDS = ("networks", "endpoints")


def removed(state_dir):
    """Gone: the image run without its volume, another --state-dir."""
    shutil.rmtree(state_dir)


def emptied(state_dir):
    for kind in KINDS:
        for name in os.listdir(os.path.join(state_dir, kind)):
            os.unlink(os.path.join(state_dir, kind, name))


def corrupted(state_dir):
    """Every record cut short, an editor's backup of each, and a note."""
    for kind in KINDS:
        folder = os.path.join(state_dir, kind)
        for name in os.listdir(folder):
            with open(os.path.join(folder, name), "r+") as f:
                f.truncate(9)
            shutil.copy(os.path.join(folder, name), os.path.join(folder, name + "~"))
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write('{"id": "notes", "options": {"VxlanId": "1"}}')
