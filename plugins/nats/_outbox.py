"""The relay's pure parts: subjects and message ids of events, and the window of publishes in flight.

No I/O here and no import of nats: `relay` does the talking.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.errors import ConfigError

__all__ = ["DEFAULT_STREAM", "SUBJECT_PREFIX", "AckWindow", "check_stream_name", "event_subject", "msg_id"]

DEFAULT_STREAM = "SLIPSTREAM"
SUBJECT_PREFIX = "slipstream.events"

# A subject token may not be empty or hold '.', '*', '>' or white space; '%' is escaped too, so
# that the escaping is reversible.
_UNSAFE_TOKEN_CHAR = re.compile(r"[.*>%\s]|[^\x21-\x7e]")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SKIPPED = object()  # the "ack" of an event moved past unpublished (AckWindow.skip)


def subject_token(value: str) -> str:
    """``value`` as one NATS subject token: unsafe characters percent-encoded, ``_`` when empty.

    Names made of letters, digits, ``-`` and ``_`` (every id Slipstream makes, and the usual
    project and domain names) come out unchanged, so a subscriber can filter on them as they are.
    """
    if not value:
        return "_"
    return _UNSAFE_TOKEN_CHAR.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def event_subject(project: str, domain: str, execution_id: str, prefix: str = SUBJECT_PREFIX) -> str:
    """The subject an execution's events are published to: ``<prefix>.<project>.<domain>.<execution_id>``."""
    return f"{prefix}.{subject_token(project)}.{subject_token(domain)}.{subject_token(execution_id)}"


def msg_id(execution_id: str, version: int) -> str:
    """The ``Nats-Msg-Id`` of an event: JetStream drops a second message with the same id."""
    return f"{execution_id}:{version}"


def check_stream_name(stream: str, prefix: str) -> None:
    """Validate the relay's stream name and subject prefix.

    Raises:
        ConfigError: a name JetStream refuses, or a prefix that is not plain subject tokens.
    """
    if not _STREAM_NAME.match(stream):
        raise ConfigError(
            f"invalid JetStream stream name {stream!r}: use letters, digits, '-' and '_' (e.g. {DEFAULT_STREAM!r})"
        )
    tokens = prefix.split(".")
    if not prefix or any(not t or subject_token(t) != t for t in tokens):
        raise ConfigError(
            f"invalid subject prefix {prefix!r}: use dot-separated tokens of letters, digits, '-' and '_' "
            f"(e.g. {SUBJECT_PREFIX!r})"
        )


class AckWindow:
    """Publishes awaiting their acks, in publish order (which is ``seq`` order).

    ``acked`` is the position a relay may record as done: every event up to it is stored in the
    stream. It moves only past a prefix of acked publishes, so an event whose ack is missing is
    never skipped, whatever came back after it.

    Args:
        acked: the position to start from.
        is_duplicate: tells an ack of a message the stream already held (dropped by its Msg-Id).
    """

    def __init__(self, acked: int, is_duplicate: Callable[[Any], bool] = lambda ack: False) -> None:
        self.acked = acked
        self.published = 0  # acks of new messages
        self.duplicates = 0  # acks of messages the stream already held
        self._is_duplicate = is_duplicate
        self._pending: deque[tuple[int, asyncio.Future[Any]]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, seq: int, ack: asyncio.Future[Any]) -> None:
        """Track the publish of the event at ``seq`` (after every one added before)."""
        self._pending.append((seq, ack))

    def skip(self, seq: int) -> None:
        """Move past the event at ``seq`` without publishing it, in order after the publishes
        added before (``acked`` reaches it once they are acked)."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(_SKIPPED)
        self._pending.append((seq, done))

    def head(self) -> asyncio.Future[Any] | None:
        """The oldest ack still awaited, or ``None``."""
        return self._pending[0][1] if self._pending else None

    def head_seq(self) -> int | None:
        """The position of the oldest publish still awaiting its ack, or ``None``."""
        return self._pending[0][0] if self._pending else None

    def reap(self) -> int:
        """Move ``acked`` past the acks at the head that came back; return it.

        Raises:
            Exception: the head's publish failed (the error it failed with); everything from it on
                must be published again.
        """
        while self._pending and self._pending[0][1].done():
            seq, ack = self._pending[0]
            result = ack.result()  # raises the publish's error
            self._pending.popleft()
            self.acked = seq
            if result is _SKIPPED:  # moved past unpublished: neither published nor a duplicate
                continue
            if self._is_duplicate(result):
                self.duplicates += 1
            else:
                self.published += 1
        return self.acked

    def abandon(self, error: BaseException) -> None:
        """Fail every ack still awaited (the connection is gone) and forget them."""
        for _, ack in self._pending:
            if not ack.done():
                ack.set_exception(error)
                ack.exception()  # retrieved: no "exception never retrieved" noise
        self._pending.clear()
