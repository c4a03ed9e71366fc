"""Leases of the Postgres event store: batched advisory locks and the set of serving processes.

A lease is a session advisory lock held on the store's listener connection: it dies with that
session, so a crashed process never blocks an execution for long. Names hash into `LEASE_BUCKETS`
buckets per store, and the lock is the bucket's: executions that share a bucket are owned by the
same process, never by two (the SQLite store's file leases do the same). One lock per execution
filled Postgres's shared lock table, which holds ``max_locks_per_transaction`` x
``max_connections`` locks for the whole server (6,400 by default): 20,000 executions running in one
serve made every new connection to that server fail (``out of shared memory``). Claims and releases
that arrive while a lock query is in flight go out together in the next one (one round trip for a
whole batch instead of one per execution, as launches of a thousand executions at once need).

Every serving loop's session is a member (`join`), named in ``pg_stat_activity`` by its
``application_name``. Members read that list every ``member_interval`` seconds, on their lease
session, in one call that is also their beat (``slipstream_beat``):

- fair shares: of the members alive, each execution has one preferred owner by rendezvous
  hashing (the highest hash of its bucket and member), so a new execution goes to one process
  without a race, and the executions of a member that goes away spread over all the others;
- takeover: when a member goes away (its process was killed, its connection lost), the
  survivors' ``lease_epoch`` moves on and their loops look for executions nobody holds at once,
  instead of at the next periodic resync;
- silence: each look is also a beat (migration 0011). A member that has
  not beaten for ``member_timeout`` seconds (hung, stopped, or its host gone without closing its
  socket, which the server would notice only when TCP keepalive gives up, two hours by default)
  has its session ended by the others, which frees its leases: then it has gone away, as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import msgspec

from engine._leases import bucket_of
from engine.errors import AccessDenied, ConfigError, StoreUnavailable

__all__ = [
    "DEFAULT_MEMBER_TIMEOUT",
    "LEASE_BUCKETS",
    "AdvisoryLeases",
    "ServingProcess",
    "lease_bucket",
    "lease_key",
    "member_name",
    "serving_processes",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
# an `exclusive` call waiting for the lease session: what to run on it, and who waits for the result
_Action = tuple[Callable[[asyncpg.Connection], Awaitable[Any]], asyncio.Future[Any]]

# a member's application_name is the store's member name, then "@<scope tag>" for a loop scoped to
# a project or domain (`_scope_tag`)
_MEMBERS = (
    "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()"
    " AND (application_name = $1 OR starts_with(application_name, $1 || '@'))"
)
# the same list, with the seconds since each member last beat, after this session's own beat
_BEAT = "SELECT pid, application_name, quiet FROM slipstream_beat($1)"
DEFAULT_MEMBER_TIMEOUT = 10.0
# Buckets of a store's leases: the most advisory locks its serving processes hold together. Fair
# shares and takeover move whole buckets; 1,024 leaves room for several stores on one server.
LEASE_BUCKETS = 1024


def lease_bucket(name: str) -> int:
    """The bucket whose lock holds ``name``'s lease."""
    return bucket_of(name, LEASE_BUCKETS)


def lease_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a lease name (hash collisions only share a lease)."""
    return int.from_bytes(hashlib.sha256(b"slipstream-lease:" + name.encode()).digest()[:8], "big", signed=True)


def _score(name: str, member: int) -> bytes:
    return hashlib.blake2b(f"{member}:{name}".encode(), digest_size=8).digest()


def _scope_tag(project: str | None, domain: str | None) -> str | None:
    """What a member scoped to ``project``/``domain`` appends to its name (None: unscoped): a short
    hash, since ``application_name`` holds 63 bytes and a scope's names up to 63 each."""
    if project is None and domain is None:
        return None
    return hashlib.blake2b(f"{project or ''}/{domain or ''}".encode(), digest_size=_TAG_BYTES).hexdigest()


_TAG_BYTES = 4  # a scope tag is this many bytes of hash, in hex after an "@"
_MAX_APPLICATION_NAME = 63  # what Postgres keeps of an application_name


def member_name(schema: str) -> str:
    """The ``application_name`` that marks the serving loops of ``schema``.

    A scoped loop appends ``@<scope tag>`` to it, and Postgres keeps 63 bytes: a schema name too
    long for both is shortened and made unique by a hash, so that the loops of a long-named
    schema still find each other."""
    name = f"slipstream-serve:{schema}"
    if len(name) + 1 + 2 * _TAG_BYTES <= _MAX_APPLICATION_NAME:
        return name
    digest = hashlib.blake2b(schema.encode(), digest_size=_TAG_BYTES).hexdigest()
    return f"slipstream-serve:{schema[:24]}~{digest}"


def _tag_of(application_name: str, member_name: str) -> str | None:
    """The scope tag in a member's ``application_name`` (None: unscoped)."""
    return application_name[len(member_name) + 1 :] or None


def _covering(project: str | None, domain: str | None) -> set[str | None]:
    """The scope tags of the members that run an execution of ``project``/``domain``."""
    if project is None or domain is None:  # not known: any member may
        return set()
    return {None, _scope_tag(project, domain), _scope_tag(project, None), _scope_tag(None, domain)}


class AdvisoryLeases:
    """Leases on the connection ``session()`` returns (the listener), batched, with membership.

    Args:
        session: the current lease session (None while it reconnects).
        fetch: runs a query on some pooled connection (the member count, ending a silent member's
            session).
        member_name: the ``application_name`` that marks this store's members (one per schema).
        unavailable: the driver errors that mean the session is gone.
        woken: called when the member list lost someone (the store wakes its consumers).
        member_interval: seconds between looks at the member list (and beats).
        member_timeout: seconds without a beat after which the other members end a member's session.
    """

    def __init__(
        self,
        session: Callable[[], asyncpg.Connection | None],
        fetch: Callable[..., Awaitable[list[Any]]],
        member_name: str,
        unavailable: tuple[type[BaseException], ...],
        woken: Callable[[], None],
        member_interval: float = 0.5,
        member_timeout: float = DEFAULT_MEMBER_TIMEOUT,
    ) -> None:
        self._session = session
        self._fetch = fetch
        self._member_name = member_name
        self._member = False  # joined once: join again on a new session, lease or not
        self._unavailable = unavailable
        self._woken = woken
        self.member_interval = member_interval
        self.member_timeout = member_timeout
        self._cannot_end: set[int] = set()  # silent members this role may not end (said once each)
        self._older_said: set[int] = set()  # members of an earlier version, warned about once each
        self._held: dict[int, set[str]] = {}  # bucket -> the names held through its lock
        # the callers waiting for each bucket's lock, queued for the next lock query or in the one
        # under way: a future each, so that one who gives up (cancelled) leaves the others their answer
        self._claims: dict[int, list[tuple[str, asyncio.Future[bool]]]] = {}
        self._sending: dict[int, list[tuple[str, asyncio.Future[bool]]]] = {}
        self._releases: list[int] = []  # buckets to unlock
        # actions waiting for the lease session (`exclusive`), run by the flush between batches
        self._actions: list[_Action] = []
        self._flushing = False
        self._joined: asyncpg.Connection | None = None  # the session that announced itself a member
        self._members: tuple[int, ...] = ()
        self._tags: dict[int, str | None] = {}  # member -> its scope tag (None: unscoped)
        self._tag: str | None = None  # this member's
        self._me: int | None = None
        self._epoch = 0
        self._watcher: asyncio.Task[None] | None = None

    # -- leases ------------------------------------------------------------------------------------

    async def claim(self, name: str) -> bool:
        """Hold ``name``'s lease; False if another session holds it.

        Raises:
            StoreUnavailable: the lease session is down (the caller retries later).
        """
        session = self._session()
        bucket = lease_bucket(name)
        names = self._held.get(bucket)
        if names is not None and session is not None and not session.is_closed():
            names.add(name)
            return True
        # a claim of the same bucket queued or in flight answers this one too: locking twice would
        # stack the lock, and one release would then leave it held
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiting = self._claims.get(bucket) or self._sending.get(bucket)
        if waiting is None:
            self._claims[bucket] = [(name, future)]
        else:
            waiting.append((name, future))
        if not self._flushing:
            await self._flush()
        return await future

    async def release(self, name: str) -> None:
        """Give ``name``'s lease up (errors ignored: a lost session already released it); the
        bucket's lock goes once none of its names is held."""
        bucket = lease_bucket(name)
        names = self._held.get(bucket)
        if names is None or name not in names:
            return
        names.discard(name)
        if names:
            return
        del self._held[bucket]
        self._releases.append(bucket)
        if not self._flushing:
            await self._flush()

    async def join(self, project: str | None = None, domain: str | None = None) -> None:
        """Count this session among the members (a serving loop), before it holds any lease;
        ``project``/``domain``: the loop runs only that scope's executions (`prefers`)."""
        self._member = True
        self._tag = _scope_tag(project, domain)
        while True:
            session = self._session()
            if session is None or session.is_closed():
                raise StoreUnavailable("the Postgres lease session is reconnecting; try again shortly")
            if self._joined is session:
                return
            if self._flushing:  # the flush in progress joins, or the next one will
                await asyncio.sleep(0.005)
                continue
            await self._flush()
            if self._joined is not self._session():
                raise StoreUnavailable("cannot join the serving loops of the store; try again shortly")

    async def exclusive(self, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``action`` on the lease session between lock queries (a connection runs one
        command at a time) and return its result: between two batches of the flush under way (a
        steady stream of claims never keeps it waiting), or in a flush of its own.

        Raises:
            StoreUnavailable: the lease session is down.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._actions.append((action, future))
        if not self._flushing:
            await self._flush()
        return await future

    async def count_members(self, project: str | None = None, domain: str | None = None) -> int:
        """The serving loops sharing the store now (the sessions that joined), those that run
        ``project``/``domain``'s executions when both are given."""
        rows = await self._fetch(_MEMBERS, self._member_name)
        covering = _covering(project, domain)
        return sum(1 for _, name in rows if not covering or _tag_of(str(name), self._member_name) in covering)

    def clear(self) -> None:
        """Forget every lease: the session that held them is gone, and so are its locks."""
        self._held.clear()
        self._releases.clear()
        self._joined = None

    async def close(self) -> None:
        """Stop watching the member list and forget every lease (the session is being closed)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        self.clear()
        closing = StoreUnavailable("the event store is closing")
        for future in [*(f for fs in self._claims.values() for _, f in fs), *(f for _, f in self._actions)]:
            _fail(future, closing)
        self._claims.clear()
        self._actions.clear()

    async def _flush(self) -> None:
        """Run queued actions, send queued releases, then queued claims, until none is left (one
        caller at a time)."""
        self._flushing = True
        try:
            join = self._must_join()  # tried once per flush: a failing session is not hammered
            while self._releases or self._claims or join or self._actions:
                actions, self._actions = self._actions, []
                await self._run(actions)
                releases, self._releases = self._releases, []
                claims, self._claims = self._claims, {}
                self._sending = claims
                try:
                    await self._send(releases, claims, join)
                except BaseException as exc:
                    error = exc
                    if isinstance(exc, self._unavailable):
                        names = sorted(name for waiting in claims.values() for name, _ in waiting)
                        error = StoreUnavailable(f"cannot take the leases of {names[:3]}...: {exc}")
                    waiting = [f for fs in claims.values() for _, f in fs]
                    if not isinstance(exc, Exception):  # cancelled: nobody is left to send the rest
                        waiting += [*(f for fs in self._claims.values() for _, f in fs), *(f for _, f in self._actions)]
                        self._claims, self._actions = {}, []
                    for future in waiting:
                        _fail(future, error)
                    if not isinstance(exc, Exception):
                        raise
                finally:
                    # answered: a claim from now on must wait for the next batch, not join this one
                    # (the actions the next turn runs first would leave it unanswered)
                    self._sending = {}
                join = False
        finally:
            self._flushing = False

    async def _run(self, actions: list[_Action]) -> None:
        """Run ``actions`` on the lease session, each answering its `exclusive` caller."""
        for index, (action, future) in enumerate(actions):
            session = self._session()
            if session is None or session.is_closed():
                _fail(future, StoreUnavailable("the Postgres lease session is reconnecting; try again shortly"))
                continue
            try:
                result = await action(session)
            except Exception as exc:
                _fail(future, exc)
            except BaseException as exc:  # cancelled: nobody is left to run the rest
                for _, waiting in actions[index:] + self._actions:
                    _fail(waiting, StoreUnavailable(f"abandoned: {exc!r}"))
                self._actions = []
                raise
            else:
                if not future.done():
                    future.set_result(result)

    async def _send(
        self, releases: list[int], claims: dict[int, list[tuple[str, asyncio.Future[bool]]]], join: bool
    ) -> None:
        session = self._session()
        if session is None or session.is_closed():
            for waiting in claims.values():
                for _, future in waiting:
                    _fail(future, StoreUnavailable("the Postgres lease session is reconnecting; try again shortly"))
            return
        if releases:
            with contextlib.suppress(*self._unavailable):
                await session.execute(
                    "SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k", [self._key(b) for b in releases]
                )
        if join and self._joined is not session:
            await self._join(session)
        if not claims:
            return
        buckets = [b for b in claims if b not in self._held]  # held meanwhile: locking again would stack
        rows = (
            await session.fetch(
                "SELECT ord, pg_try_advisory_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, ord)",
                [self._key(b) for b in buckets],
            )
            if buckets
            else []
        )
        got = {buckets[int(ord_) - 1]: bool(held) for ord_, held in rows}
        if self._session() is not session:  # lost while we asked: what it granted died with it
            got = {}
        for bucket, waiting in claims.items():
            held = bucket in self._held or got.get(bucket, False)
            if held:  # even if every caller gave up: the server holds it all the same
                self._held.setdefault(bucket, set()).update(name for name, _ in waiting)
            for _, future in waiting:
                if not future.done():
                    future.set_result(held)

    def _key(self, bucket: int) -> int:
        """The advisory-lock key of one of this store's buckets (the member name names the schema)."""
        return lease_key(f"{self._member_name}#{bucket}")

    # -- membership --------------------------------------------------------------------------------

    def _must_join(self) -> bool:
        session = self._session()
        return self._member and session is not None and not session.is_closed() and self._joined is not session

    async def _join(self, session: asyncpg.Connection) -> None:
        """Mark the session a member (its application_name), and start watching the member list."""
        name = self._member_name if self._tag is None else f"{self._member_name}@{self._tag}"
        await session.execute("SELECT set_config('application_name', $1, false)", name)
        self._me = session.get_server_pid()
        self._joined = session
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_members(), name="slipstream-store-members")
        with contextlib.suppress(Exception):
            await self._look(session)  # in this flush, which holds the session: beat on it directly

    @property
    def epoch(self) -> int:
        """Moves on whenever a member went away (its leases are free for the others to take)."""
        return self._epoch

    def prefers(self, name: str, project: str | None = None, domain: str | None = None) -> bool:
        """Whether this member is ``name``'s preferred owner among the members alive that run its
        ``project``/``domain`` (rendezvous hashing; every member when they are not given); True
        while membership is unknown (not yet a member, or alone)."""
        members, me = self._members, self._me
        if me is None or len(members) < 2 or me not in members:
            return True
        covering = _covering(project, domain)
        if covering:
            members = tuple(m for m in members if self._tags.get(m) in covering)
            if me not in members:
                return False
        bucket = str(lease_bucket(name))  # whole buckets are owned: the preference is the bucket's
        return max(members, key=lambda m: _score(bucket, m)) == me

    async def _look(self, session: asyncpg.Connection | None = None) -> None:
        """Beat on the lease session, read the member list, and end the sessions of the members
        that have been silent for longer than ``member_timeout``."""
        if session is not None:
            rows = await session.fetch(_BEAT, self._member_name)
        else:
            rows = await self.exclusive(lambda held: held.fetch(_BEAT, self._member_name))
        silent = {
            int(pid): float(quiet)
            for pid, _, quiet in rows
            if quiet is not None and quiet > self.member_timeout and int(pid) != self._me
        }
        if silent:
            ended = await self._end_sessions(silent)
            rows = [r for r in rows if int(r[0]) not in ended]
        for pid, _, quiet in rows:
            if quiet is None and int(pid) != self._me and int(pid) not in self._older_said:
                self._older_said.add(int(pid))
                log.warning(
                    "the serving process with session %d is of a version before migration 0011 (it does not beat): "
                    "its leases are one lock per execution and do not exclude this version's, so an execution may "
                    "run in both. Stop it (upgrade every serve at once: docs/deployment.md)",
                    pid,
                )
        members = tuple(sorted(int(r[0]) for r in rows))
        self._tags = {int(pid): _tag_of(str(name), self._member_name) for pid, name, _ in rows}
        if set(self._members) - set(members):
            self._epoch += 1
            log.info("a serving process left (%d now): taking over its executions", len(members))
            self._woken()
        self._members = members

    async def _end_sessions(self, silent: dict[int, float]) -> set[int]:
        """End the sessions of silent members (with this role's rights); returns those ended."""
        ended: set[int] = set()
        for pid, quiet in silent.items():
            try:
                rows = await self._fetch("SELECT pg_terminate_backend($1)", pid)
            except AccessDenied as exc:
                if pid not in self._cannot_end:
                    self._cannot_end.add(pid)
                    log.warning(
                        "the serving process with session %d has been silent for %.0f s, but this role may not end "
                        "its session (%s): its executions wait until the server drops it. Run every serve as one "
                        "role, or grant this one pg_signal_backend",
                        pid,
                        quiet,
                        exc,
                    )
                continue
            if rows and rows[0][0]:
                ended.add(pid)
                log.warning(
                    "the serving process with session %d has been silent for %.1f s (member timeout %.1f s, "
                    "SLIPSTREAM_MEMBER_TIMEOUT): ended its session, so that its executions move to the others",
                    pid,
                    quiet,
                    self.member_timeout,
                )
        return ended

    async def _watch_members(self) -> None:
        while True:
            await asyncio.sleep(self.member_interval)
            try:
                if self._must_join() and not self._flushing:  # the session was replaced
                    await self._flush()
                await self._look()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: leases are moot until it is back
                log.debug("cannot read the member list: %s", exc)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


# --- who serves: what `slipstream admin serves` lists -------------------------------------------------


class ServingProcess(msgspec.Struct, frozen=True):
    """A serving loop's lease session, as Postgres sees it.

    ``scope``: None for a loop that runs every project, else the tag of its project and domain (a
    hash: `_scope_tag`). ``quiet_s``: seconds since its last beat (None: it never beat, a version
    before migration 0011). ``leases``: the advisory locks its session holds (executions, a relay).
    ``client``: its address (None over a unix socket, or for a role that may not see it).
    """

    pid: int
    scope: str | None
    client: str | None
    started: datetime
    quiet_s: float | None
    leases: int


_SERVING = """
SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start,
       extract(epoch FROM clock_timestamp() - m.beat)::float8,
       (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
FROM pg_stat_activity a LEFT JOIN slipstream_members m ON m.pid = a.pid
WHERE a.datname = current_database() AND (a.application_name = $1 OR starts_with(a.application_name, $1 || '@'))
ORDER BY a.backend_start, a.pid
"""


async def serving_processes(conn: asyncpg.Connection, schema: str) -> list[ServingProcess]:
    """The serving loops of the store in ``schema``, oldest first (``conn``'s search path must
    reach the store's tables).

    Raises:
        ConfigError: the schema holds no store of this version (start a serve of it once).
    """
    name = member_name(schema)
    try:
        rows = await conn.fetch(_SERVING, name)
    except asyncpg.UndefinedTableError as exc:
        raise ConfigError(
            f"schema {schema!r} holds no Slipstream store of this version ({exc}): start `slipstream serve` of this "
            "version once, which applies the migrations"
        ) from exc
    return [
        ServingProcess(int(pid), _tag_of(str(app), name), client, started, quiet, int(leases))
        for pid, app, client, started, quiet, leases in rows
    ]
