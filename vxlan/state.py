"""What the plugin remembers across restarts: one small JSON file per network
and per endpoint under --state-dir.

Docker never replays CreateNetwork after a plugin restart, and CreateEndpoint
and Join do not carry the network's options, so the options validated at
CreateNetwork are kept here. Files are replaced atomically (write, fsync,
rename), so a crash leaves either the old or the new record. A file that cannot
be read is reported in the log and skipped, never fatal.
"""

import json
import logging
import os
import re
import tempfile

log = logging.getLogger("vxlan.state")
_ID = re.compile(r"^[0-9A-Za-z]+\Z")


class StateStore:
    def __init__(self, root):
        self.root = root
        for kind in ("networks", "endpoints"):
            os.makedirs(os.path.join(root, kind), mode=0o700, exist_ok=True)

    def save(self, kind, record_id, record):
        folder = os.path.join(self.root, kind)
        with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".tmp-", delete=False) as f:
            json.dump(record, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f.name, self._path(kind, record_id))

    def delete(self, kind, record_id):
        try:
            os.unlink(self._path(kind, record_id))
        except FileNotFoundError:
            pass

    def load_all(self, kind, tidy=True):
        """Every readable record of one kind, by ID. `tidy`: remove what
        interrupted saves left (only the plugin itself may: a reader such as
        `status` could take away a save in progress)."""
        records = {}
        folder = os.path.join(self.root, kind)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith(".tmp-"):
                if tidy:
                    os.unlink(path)  # an interrupted save; the old record (if any) stands
                continue
            record_id = name[:-len(".json")]
            try:
                with open(path) as f:
                    records[record_id] = json.load(f)
            except (OSError, ValueError) as error:
                log.error("ignoring unreadable state file %s: %s", path, error)
        return records

    def _path(self, kind, record_id):
        if not _ID.match(record_id):
            raise ValueError(f"not an ID: {record_id!r}")
        return os.path.join(self.root, kind, record_id + ".json")
