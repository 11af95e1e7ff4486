"""Operator commands of ``tocsin serve --partitions N``'s API, carried out by the
partitions' routers (DESIGN.md section 17).

Only a log's writer decides what a command adds to it (under its lock, against its
projection), so the API does not decide: it sends the command, as data
(``commands.Command``), to the router of the partition it concerns, over NATS
request-reply (``tocsin.control.command.p<k>``): an ack or a resolve to the partition
that holds the alert, a silence to every partition (a silence selects alerts of any of
them; each logs it under the same id). The reply carries the seq the log reached;
the API's view of that log catches up to it before the API answers, so what a client
reads after a command includes it. ``retry-failed`` goes to every partition and adds
up their answers.
"""

from __future__ import annotations

import logging

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from tocsin.core import commands
from tocsin.core.commands import CommandError
from tocsin.core.subjects import command_subject, retry_failed_subject
from tocsin.pipeline.control import CommandReply, RetryReply, RetryRequest
from tocsin.store.partitioned import PartitionedLog

log = logging.getLogger("tocsin.control")

PATIENCE = 30.0
"""Seconds a partition's router has to answer a command (its commit included)."""


class PartitionControl:
    """The API's control when the log is the partitions' (``api.context.ApiContext``)."""

    def __init__(self, nc: NATS, partitions: PartitionedLog) -> None:
        self._nc = nc
        self._partitions = partitions
        self._encoder = msgspec.json.Encoder()

    async def command(self, command: commands.Command) -> int:
        """Send ``command`` to the partitions it concerns; the facts they added. Refused
        (``CommandError``) as the partition refused it, or 503 when one did not answer
        (a silence may then be logged by the others: sending it again with the same id
        logs it where it is missing)."""
        alert_id = commands.about_alert(command)
        if alert_id is None:
            targets = list(range(self._partitions.count))
        else:
            k = self._partitions.partition_of(alert_id)
            if k is None:
                raise CommandError(404, f"no alert {alert_id!r}", "alert_id")
            targets = [k]
        added = 0
        for k in targets:
            reply = await self._ask(k, command_subject(k), self._encoder.encode(command))
            answer = msgspec.json.decode(reply, type=CommandReply)
            if answer.error is not None:
                raise CommandError(answer.status or 500, answer.error, answer.field)
            added += answer.facts
            await self._partitions.catch_up(k, until=answer.seq)
        return added

    async def retry_failed(self, request: RetryRequest) -> RetryReply:
        """Every partition re-queues its own dead letters; their answers added up (the
        first refusal is the answer)."""
        total = RetryReply()
        for k in range(self._partitions.count):
            reply = await self._ask(k, retry_failed_subject(k), self._encoder.encode(request))
            answer = msgspec.json.decode(reply, type=RetryReply)
            if answer.error is not None:
                raise CommandError(answer.status or 500, answer.error)
            total.requeued += answer.requeued
            total.notification_ids += answer.notification_ids
        return total

    async def _ask(self, k: int, subject: str, body: bytes) -> bytes:
        try:
            msg = await self._nc.request(subject, body, timeout=PATIENCE)
        except (NoRespondersError, NatsTimeout) as error:
            log.warning("partition %d did not answer on %s: %s", k, subject, type(error).__name__)
            raise CommandError(
                503, f"the router of partition {k} did not answer (starting, or gone)"
            ) from error
        return bytes(msg.data)
