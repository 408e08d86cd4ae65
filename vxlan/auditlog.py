"""The command log: every ip/bridge command the plugin runs, before it runs and
again with its result, and the frames it sends itself (announce.py, probe.py).

One source of events, the logger "vxlan.commands": its records read as a
command an admin can paste into a shell on stderr (the human log), and
`AuditFileHandler` writes the same records as JSON Lines to the audit file.
The RPC and the network/endpoint IDs that caused a command come from
`request_context`, which api.py sets per request.
"""

import contextvars
import datetime
import json
import logging
import logging.handlers
import os
import shlex
import sys

from . import commands as cmd

request_context = contextvars.ContextVar("request_context", default={})
log = logging.getLogger("vxlan.commands")
MAY_HAVE_RUN = "may have run"  # ends the status of each command of a killed batch


def started(command, batch=None, cause=None):
    """Logs a command about to run (`batch`: its place in a batch; `cause`: why
    it runs, when no request explains it)."""
    context = request_context.get()
    log.info("run %s%s%s", command, _where(context, cause), _batch_note(batch),
             extra={"audit": dict(event="run", cmd=command, batch=batch, cause=cause,
                                  **context)})


def finished(command, batch, status, duration, stderr="", cause=None, note=None):
    """Logs a command's result: "ok", or why it failed or did not run (`note`:
    what else an "ok" should say, e.g. that it did less than planned)."""
    context = request_context.get()
    seconds = f"{duration * 1000:.1f} ms"
    record = dict(event="result", cmd=command, batch=batch, status=status,
                  duration_ms=round(duration * 1000, 2), stderr=stderr, cause=cause,
                  note=note, **context)
    if status == "ok":
        log.info("ok  %s (%s)%s%s", command, seconds, _where(context, cause),
                 f": {note}" if note else "", extra={"audit": record})
    else:
        log.error("%s %s (%s)%s: %s", status, command, seconds, _where(context, cause),
                  stderr.strip() or "no error output", extra={"audit": record})


def _where(context, cause=None):
    parts = [f"{key}={context[key][:12]}" for key in ("network", "endpoint") if key in context]
    if "rpc" in context:
        parts.insert(0, context["rpc"])
    if cause:
        parts.append(f"cause: {cause}")
    return f" [{' '.join(parts)}]" if parts else ""


def _batch_note(batch):
    return f" (batch {batch['index']}/{batch['size']})" if batch else ""


class AuditFileHandler(logging.handlers.WatchedFileHandler):
    """JSON Lines of the command log, appended to a file that survives rotation.

    Rename-and-create (logrotate's default): the file is reopened by name at the
    next record, as WatchedFileHandler does, and `reopen()` (on SIGHUP) does it
    at once. copytruncate: the file is opened for appending, so writes go to the
    new end after a truncation. Each record is one write(2) of a whole line; a
    failed write (disk full) leaves no part of its line in the file, is reported
    on stderr, and never fails the command it describes."""

    def __init__(self, path):
        super().__init__(path)
        self.addFilter(lambda record: hasattr(record, "audit"))
        self.failures = 0

    def _open(self):
        return open(self.baseFilename, "ab", buffering=0)

    def format(self, record):
        now = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        fields = {"time": now.isoformat(timespec="milliseconds"), **record.audit}
        return json.dumps({k: v for k, v in fields.items() if v not in (None, "")})

    def emit(self, record):
        try:
            self.reopenIfNeeded()
            self._append((self.format(record) + "\n").encode())
        except Exception:
            self.handleError(record)

    def _append(self, line):
        """Appends the whole line, or nothing: a write cut short is taken back."""
        fd = self.stream.fileno()
        end = os.fstat(fd).st_size
        try:
            rest = memoryview(line)
            while rest:  # a short write is followed by one that says why (ENOSPC)
                rest = rest[os.write(fd, rest):]
        except OSError:
            if os.fstat(fd).st_size > end:
                os.ftruncate(fd, end)
            raise

    def reopen(self):
        """Closes the file and opens it again by name (after a rotation)."""
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = None
            self.stream = self._open()
            self._statstream()
        except OSError:
            self.handleError(None)
        finally:
            self.release()

    def handleError(self, record):
        self.failures += 1
        error = sys.exc_info()[1]
        what = (f"this record is missing from it: {record.getMessage()}" if record
                else "it could not be reopened")
        print(f"AUDIT LOG WRITE FAILED ({self.baseFilename}: {error}); {what}",
              file=sys.stderr, flush=True)


def open_audit_file(path):
    """Adds the audit file to the command log; returns its handler."""
    handler = AuditFileHandler(path)
    log.addHandler(handler)
    log.setLevel(logging.INFO)  # every command reaches the file, whatever the root level
    return handler


def replayable(lines):
    """(commands, doubtful) from the lines of an audit file: the argv of every
    ip/bridge command that finished "ok" and changed the host (no query), in the order
    they finished; and the commands that may or may not have run."""
    commands, doubtful = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record.get("event") != "result":
                continue
            argv = shlex.split(record["cmd"])
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"line {number} is not an audit record: {error}") from None
        if argv[:1] not in (["ip"], ["bridge"]) or cmd.is_query(argv):
            continue  # announcements are frames the plugin sent, not commands
        if record.get("status") == "ok":
            commands.append(argv)
        elif str(record.get("status", "")).endswith(MAY_HAVE_RUN):
            doubtful.append(record["cmd"])
    return commands, doubtful
