"""``Publisher``'s commands, byte for byte, without a broker (``tests/bus/test_streams.py``
publishes through one): what a message's ``HPUB`` is made of on its quick ways."""

from __future__ import annotations

import pytest

from tocsin.bus.publisher import Publisher, _header_block
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import MSG_ID


class FakeInbox:
    """All a ``Publisher`` asks of its connection before it publishes."""

    def new_inbox(self) -> str:
        return "_INBOX.test"


def hpub(block: bytes, payload: bytes) -> bytes:
    return b"HPUB s r %d %d\r\n%s%s\r\n" % (len(block), len(block) + len(payload), block, payload)


@pytest.mark.parametrize("msg_id", ["01JD0001:delivered", " a", "a ", "a\r\nb", "é", "\xa0x"])
def test_a_message_whose_one_header_is_its_id_is_written_as_with_others(msg_id: str) -> None:
    """Catches the block of a message with no header but its id (an outcome, issue #20:
    written without a dict built and walked) differing from the general block's bytes:
    an id written unclean where ``nc.publish`` would clean it, or another framing; and
    a publisher's own headers (a partition's mark) left off such a message."""
    payload = b'{"n":1}'
    publisher = Publisher(FakeInbox())  # type: ignore[arg-type]
    general = hpub(_header_block({MSG_ID: msg_id}), payload)
    assert publisher._command(Outbound("s", payload, msg_id), "r") == general
    marked = Publisher(FakeInbox(), {"Tocsin-Partition": "2"})  # type: ignore[arg-type]
    both = hpub(_header_block({MSG_ID: msg_id, "Tocsin-Partition": "2"}), payload)
    assert marked._command(Outbound("s", payload, msg_id), "r") == both
