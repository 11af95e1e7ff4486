"""The soak's load (``bench/soak.py``): what it publishes, what the operator does, and
exactly what was acknowledged.

``Publisher`` sends every message with a ``Nats-Msg-Id`` and retries it under that id
until JetStream answers with a PubAck (the broker is killed during the soak), so its
counts are exact: a PubAck that says ``duplicate`` means JetStream already held that
message and dropped the copy; any other PubAck is one stored message. The counts split
by what the message is: a firing event (unique by ``event_id``, or a deliberate repeat
of an earlier ``event_id`` under a new ``Nats-Msg-Id``), a resolve, or bad input.

``Operator`` acks alerts and creates and deletes silences through the HTTP API, and
counts what the API confirmed, what it refused and what it left unknown (no answer: the
service was being killed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import nats

from tocsin.core.subjects import MSG_ID

SUBJECT = "alerts.in.soak"
STEADY_TYPE = "soak_steady"
BURST_TYPE = "soak_burst"
BIG_TYPE = "soak_big"
GROUPS = 10  # label grp=g0..g9: what silences select
PUBLISH_TIMEOUT = 2.0  # one attempt's wait for a PubAck
GIVE_UP_AFTER = 120.0  # a message not acknowledged by then is reported, not retried


async def _quiet(*_: Any) -> None:
    """nats-py reports every reconnect through callbacks; the soak counts them itself."""


@dataclass
class Published:
    """What JetStream acknowledged, exactly."""

    stored: int = 0  # messages stored (PubAck not duplicate)
    firing_ids: set[str] = field(default_factory=set)  # unique firing events stored
    firing_by_type: dict[str, int] = field(default_factory=dict)
    repeated_event_ids: int = 0  # stored messages repeating a stored firing event_id
    resolved: int = 0
    bad: int = 0
    copies_sent: int = 0  # deliberate re-publishes under the same Nats-Msg-Id
    copies_dropped: int = 0  # ... that JetStream dropped as duplicates
    retries: int = 0  # publish attempts that got no PubAck (broker away) and were retried
    lost_acks: int = 0  # retries answered "duplicate": the first attempt had been stored
    unacknowledged: int = 0  # given up after GIVE_UP_AFTER: unknown whether stored

    @property
    def firing(self) -> int:
        return len(self.firing_ids)


class Publisher:
    """One NATS connection that reconnects forever; ``publish`` returns once the
    message is acknowledged (or given up on, counted in ``unacknowledged``)."""

    def __init__(self, url: str, run: str) -> None:
        self.url = url
        self.run = run
        self.counts = Published()
        self._nc: Any = None
        self._js: Any = None
        self._serial = 0

    async def connect(self) -> None:
        self._nc = await nats.connect(
            self.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            allow_reconnect=True,
            error_cb=_quiet,
            disconnected_cb=_quiet,
            reconnected_cb=_quiet,
        )
        self._js = self._nc.jetstream()

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    @property
    def js(self) -> Any:
        return self._js

    def new_id(self) -> str:
        self._serial += 1
        return f"{self.run}-{self._serial}"

    async def _send(self, body: bytes, msg_id: str, fresh: bool = True) -> bool | None:
        """Publish until acknowledged: ``True`` stored (by this attempt or, when a retry
        is answered "duplicate", by an earlier one whose PubAck was lost), ``False``
        dropped as a copy of an earlier message (``fresh=False``: a deliberate copy),
        ``None`` given up (unknown)."""
        deadline = time.monotonic() + GIVE_UP_AFTER
        retried = False
        while True:
            try:
                ack = await self._js.publish(
                    SUBJECT, body, timeout=PUBLISH_TIMEOUT, headers={MSG_ID: msg_id}
                )
            except Exception:  # no PubAck (timeout, no responders, reconnecting): again
                if time.monotonic() > deadline:
                    self.counts.unacknowledged += 1
                    return None
                self.counts.retries += 1
                retried = True
                await asyncio.sleep(0.2)
                continue
            if not ack.duplicate:
                return True
            if fresh and retried:
                self.counts.lost_acks += 1
                return True
            return False

    async def firing(
        self,
        type_: str,
        labels: dict[str, str],
        severity: str = "warning",
        details: dict[str, Any] | None = None,
        event_id: str | None = None,
        msg_id: str | None = None,
    ) -> str:
        """One firing event; its ``event_id`` (new unless given) is returned."""
        event_id = event_id or self.new_id()
        body = {
            "type": type_,
            "severity": severity,
            "summary": f"{type_} {labels.get('n', '')}",
            "labels": labels,
            "event_id": event_id,
        }
        if details:
            body["details"] = details
        stored = await self._send(msgspec.json.encode(body), msg_id or event_id)
        if stored:
            self.counts.stored += 1
            if event_id in self.counts.firing_ids:
                self.counts.repeated_event_ids += 1
            else:
                self.counts.firing_ids.add(event_id)
                by_type = self.counts.firing_by_type
                by_type[type_] = by_type.get(type_, 0) + 1
        return event_id

    async def copy(self, type_: str, labels: dict[str, str], event_id: str) -> None:
        """The same message again under the same ``Nats-Msg-Id``: JetStream drops it."""
        self.counts.copies_sent += 1
        body = {
            "type": type_,
            "severity": "warning",
            "summary": f"{type_} {labels.get('n', '')}",
            "labels": labels,
            "event_id": event_id,
        }
        stored = await self._send(msgspec.json.encode(body), event_id, fresh=False)
        if stored is False:
            self.counts.copies_dropped += 1
        elif stored:  # outside the duplicate window: stored, a repeated event_id
            self.counts.stored += 1
            self.counts.repeated_event_ids += 1

    async def resolve(self, type_: str, labels: dict[str, str]) -> None:
        body = {
            "type": type_,
            "severity": "warning",
            "summary": f"{type_} {labels.get('n', '')}",
            "labels": labels,
            "status": "resolved",
        }
        if await self._send(msgspec.json.encode(body), self.new_id()):
            self.counts.stored += 1
            self.counts.resolved += 1

    async def bad(self) -> None:
        """Input tocsin must reject (an unknown severity), kept in its log."""
        body = {"type": STEADY_TYPE, "severity": "loud", "summary": "soak: bad on purpose"}
        if await self._send(msgspec.json.encode(body), self.new_id()):
            self.counts.stored += 1
            self.counts.bad += 1


@dataclass
class Asked:
    """One kind of operator request: confirmed, refused (an answer that is not a
    success), unknown (no answer: it may or may not have been carried out)."""

    ok: int = 0
    refused: int = 0
    unknown: int = 0
    refusals: dict[int, int] = field(default_factory=dict)  # HTTP status (0: none) -> n


class Operator:
    """Acks and silences through the HTTP API of ``tocsin serve`` at ``api``."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.acks = Asked()
        self.silences = Asked()
        self.unsilences = Asked()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self, asked: Asked, method: str, path: str, body: Any, success: int
    ) -> Any | None:
        assert self._session is not None
        try:
            async with self._session.request(method, self.api + path, json=body) as answer:
                data = await answer.json(content_type=None)
                if answer.status == success:
                    asked.ok += 1
                    return data
                asked.refused += 1
                asked.refusals[answer.status] = asked.refusals.get(answer.status, 0) + 1
                return None
        except aiohttp.ClientConnectorError:  # nothing listening: surely not carried out
            asked.refused += 1
            asked.refusals[0] = asked.refusals.get(0, 0) + 1
            return None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            asked.unknown += 1
            return None

    async def ack_one(self) -> None:
        """Ack the newest firing, unacknowledged steady alert, if the API answers."""
        assert self._session is not None
        try:
            async with self._session.get(
                f"{self.api}/api/v1/alerts",
                params={"status": "firing", "type": STEADY_TYPE, "limit": "50"},
            ) as answer:
                if answer.status != 200:
                    return
                alerts = (await answer.json())["alerts"]
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return
        for alert in alerts:
            if not alert.get("acked_by"):
                body = {"by": "soak", "comment": "acked by the soak"}
                await self._call(self.acks, "POST", f"/api/v1/alerts/{alert['id']}/ack", body, 200)
                return

    async def silence(self, group: int, seconds: float) -> str | None:
        body = {
            "matchers": {"labels": {"grp": f"g{group}"}},
            "ends_at": f"{seconds:.0f}s",
            "created_by": "soak",
            "comment": "silenced by the soak",
        }
        created = await self._call(self.silences, "POST", "/api/v1/silences", body, 201)
        return None if created is None else str(created["id"])

    async def unsilence(self, silence_id: str) -> None:
        await self._call(self.unsilences, "DELETE", f"/api/v1/silences/{silence_id}", None, 200)
