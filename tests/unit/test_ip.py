"""Which commands share one `TOOL -batch -` process, and how a batch's failure
is read back."""

import pytest

from vxlan import ip


@pytest.mark.parametrize("argv, batchable", [
    (["ip", "link", "add", "vx1", "type", "vxlan", "id", "42"], True),
    (["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx1", "dst", "2001:db8::2"], True),
    (["ip", "-d", "-j", "link", "show"], False),      # options before the command
    (["ip", "link", "add", "a b", "type", "dummy"], False),   # would split into two words
    (["ip", "link", "set", "dev", "x", "alias", "it's"], False),
    (["ip", "link", "set", "dev", "x", "alias", "#1"], False),  # a comment in a batch
    (["ip", "link", "set", "dev", "x", "alias", ""], False),
])
def test_what_can_be_a_batch_line(argv, batchable):
    assert ip._batchable(argv) is batchable


def test_groups_keep_order_and_split_by_tool_and_kind():
    add = ["ip", "link", "add", "vx1", "type", "vxlan", "id", "42"]
    up = ["ip", "link", "set", "dev", "vx1", "up"]
    flood = ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx1", "dst", "192.0.2.2"]
    show = ["ip", "-j", "link", "show", "dev", "vx1"]
    odd = ["ip", "link", "set", "dev", "vx1", "alias", "a b"]
    assert ip._groups([add, up, flood, flood, up, show, odd, up]) == [
        [add, up], [flood, flood], [up], [show], [odd], [up]]


def test_the_failed_line_and_the_message_without_the_batch_note():
    stderr = "RTNETLINK answers: File exists\nCommand failed -:2\n"
    assert ip._failed_line(stderr, 3) == 1
    assert ip._failed_line("no line number here", 3) == 0
    assert ip._BATCH_NOTE.sub("", stderr) == "RTNETLINK answers: File exists\n"
