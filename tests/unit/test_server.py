"""Socket activation: which LISTEN_* variables make the plugin take systemd's
socket instead of binding its own."""

import pytest

from vxlan.server import sockets_passed

PID = 4242


@pytest.mark.parametrize("environ, count", [
    ({}, 0),                                                     # started by hand
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "1"}, 1),            # systemd's socket
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "vxlan.sock"}, 1),
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "0"}, 0),
    ({"LISTEN_PID": "1234", "LISTEN_FDS": "1"}, 0),              # meant for a parent
    ({"LISTEN_FDS": "1"}, 0),                                    # no LISTEN_PID: not ours
])
def test_sockets_passed(environ, count):
    assert sockets_passed(environ, PID) == count


@pytest.mark.parametrize("value", ["", "one", "-1"])
def test_a_malformed_count_for_this_process_is_refused(value):
    with pytest.raises(SystemExit, match=f"LISTEN_FDS={value!r}.*expected a number"):
        sockets_passed({"LISTEN_PID": str(PID), "LISTEN_FDS": value}, PID)
