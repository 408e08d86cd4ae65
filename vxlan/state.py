"""What the plugin remembers across restarts: one small JSON file per network,
per endpoint and per swarm allocation (allocations.py) under --state-dir.

Docker never replays CreateNetwork after a plugin restart, and CreateEndpoint
and Join do not carry the network's options, so the options validated at
CreateNetwork are kept here. Files are replaced atomically (write, fsync,
rename, fsync the folder), so a crash leaves either the old or the new record.
Writes and deletions run in a thread, never on the event loop: an fsync can
take as long as the disk likes, and other requests go on meanwhile. One that
fails (a full or read-only disk) raises StateError and leaves no stray file. A
file that cannot be read at start is reported in the log and skipped, never
fatal; so is a file whose name is not ID.json (an editor's backup, a note),
which is left where it is.

Each record carries the number of its format (FORMAT). Records of an older
format (none before 1) are read; one of a newer format, written by a newer
version of the plugin, is refused rather than misread, and kept on disk.
"""

import json
import logging
import os
import re
import tempfile
from typing import NamedTuple

import gevent

from .errors import StateError

log = logging.getLogger("vxlan.state")
_ID = re.compile(r"^[0-9A-Za-z]+\Z")
_RECORD_FILE = re.compile(r"^([0-9A-Za-z]+)\.json\Z")
FORMAT = 1  # the format of the records this version writes


class Loaded(NamedTuple):
    records: dict     # ID -> record
    newer: dict       # ID -> why not read: records of a newer format (kept on disk)
    unreadable: list  # IDs whose files could not be read (logged)


class StateStore:
    def __init__(self, root):
        self.root = root
        for kind in ("networks", "endpoints", "allocations"):
            os.makedirs(os.path.join(root, kind), mode=0o700, exist_ok=True)

    def save(self, kind, record_id, record):
        path = self._path(kind, record_id)
        data = json.dumps({**record, "format": FORMAT}, sort_keys=True)
        try:
            _off_the_loop(_write_durably, path, data)
        except OSError as error:
            raise StateError(f"cannot record {_what(kind, record_id)} in {self.root}: "
                             f"{error.strerror or error}") from None

    def delete(self, kind, record_id):
        path = self._path(kind, record_id)
        try:
            _off_the_loop(_unlink, path)
        except OSError as error:
            raise StateError(f"cannot forget {_what(kind, record_id)} in {self.root}: "
                             f"{error.strerror or error}") from None

    def load_all(self, kind, tidy=True):
        """The records of one kind (Loaded): every readable one, and which were
        not. `tidy`: remove what interrupted saves left (only the plugin itself
        may: a reader such as `status` could take away a save in progress)."""
        loaded = Loaded({}, {}, [])
        folder = os.path.join(self.root, kind)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith(".tmp-"):
                if tidy:
                    os.unlink(path)  # an interrupted save; the old record (if any) stands
                continue
            match = _RECORD_FILE.match(name)
            if not match:
                log.warning("ignoring %s: not a state file (those are named ID.json)", path)
                continue
            try:
                with open(path) as f:
                    record = json.load(f)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as error:
                log.error("ignoring unreadable state file %s: %s", path, error)
                loaded.unreadable.append(match.group(1))
                continue
            if not isinstance(record.get("format", 0), int) or record.get("format", 0) > FORMAT:
                loaded.newer[match.group(1)] = (
                    f"its state file {path} has record format {record.get('format')!r}, "
                    f"written by a newer docker-vxlan-plugin (this one reads formats up to "
                    f"{FORMAT}): run that version, or remove the file to rebuild the record "
                    "from Docker")
                continue
            loaded.records[match.group(1)] = record
        return loaded

    def _path(self, kind, record_id):
        if not _ID.match(record_id):
            raise ValueError(f"not an ID: {record_id!r}")
        return os.path.join(self.root, kind, record_id + ".json")


def _what(kind, record_id):
    return f"{kind[:-1]} {record_id[:12]}"  # "network 4e7d0c1f2b3a"


def _off_the_loop(function, *args):
    """Runs FUNCTION in gevent's thread pool; the calling greenlet waits, the
    event loop does not."""
    return gevent.get_hub().threadpool.apply(function, args)


def _write_durably(path, data):
    folder = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")  # mode 0600
    try:
        with open(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_folder(folder)  # the rename itself survives a power cut


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
