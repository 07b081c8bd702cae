"""Sequence, history and task state in Redis, each event written in one atomic Lua step."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import hiredis
import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from . import metrics
from .errors import NotReplicated
from .events import new_id, now_iso
from .resp import Pipeline, command

logger = logging.getLogger("taskcast.store")

PREFIX = "tc:"
RUNNING = PREFIX + "running"  # sorted set: running task id -> last sign of life (epoch s)
QUEUED = PREFIX + "queued"  # sorted set: queued task id -> when it was queued (epoch s)
SHARED_COUNTS = PREFIX + "stats"  # hash: counts every process adds to, shown in /metrics
WAIT_MARK = PREFIX + "waited"  # counter written before each `WAIT` (see `Store.__init__`)
DEDUPE_TTL = 3600  # seconds a stored event id is remembered, so retries never duplicate

# Store one event on every channel it targets, atomically, and with ARGV[20] = '1' also
# PUBLISH each message in the same step: pub/sub order is then seq order, whoever emits.
# Retries are idempotent by a key per event id, or, for an emitter that stores its events
# one after another in order (ARGV[21] its mark, ARGV[22] the event's count), by one key
# per emitter holding the count it reached: nothing per event stays behind in Redis.
# Returns {"ok", channel1, message1, ...}, or {"dup", ...} with the first attempt's messages
# (none when it published them itself), or {"closed"} when the event's task already ended:
# one terminal event, nothing after it, so a redelivered or cancelled task cannot add to a
# finished channel.
_STORE = """
local eid, ev, etype, task_id, user_id, topic = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local new_epoch, hsize, ttl, now_ms = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local status, sfield, svalue, ts, ckey_hint = ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15]
local attempt, max_deliveries, now_s = ARGV[17], tonumber(ARGV[18]), tonumber(ARGV[19])
local publish = ARGV[20] == '1'
local mark, count = ARGV[21], tonumber(ARGV[22])
local hbytes = tonumber(ARGV[23])
local root_id = ARGV[24]
local P = KEYS[1]
local verdict = 'ok'
local dkey, mkey = nil, nil
if publish and mark ~= '' then
  mkey = P .. 'm:' .. mark
  if count <= tonumber(redis.call('GET', mkey) or '0') then return {'dup'} end
else
  dkey = P .. 'e:' .. eid
  local dup = redis.call('GET', dkey)
  if dup then
    if dup == '1' then return {'dup'} end  -- published when first stored: nothing to repeat
    local out = cjson.decode(dup)
    out[1] = 'dup'
    return out
  end
end
local tkey = nil
local is_task_type = string.sub(etype, 1, 5) == 'task.'
if task_id ~= '' then
  tkey = P .. 't:' .. task_id
  local st = redis.call('HGET', tkey, 'status')
  if st == 'succeeded' or st == 'failed' or st == 'cancelled' then
    return {'closed'}
  end
  if user_id == '' then
    user_id = redis.call('HGET', tkey, 'owner') or ''
    if user_id ~= '' then
      -- The envelope names its owner too; our encoder puts the envelope's user_id first.
      ev = string.gsub(ev, '"user_id":null', '"user_id":' .. cjson.encode(user_id), 1)
    end
  end
  -- A start of the same attempt again means the task was redelivered after its worker was
  -- lost; past the limit it fails instead of running again.
  if etype == 'task.started' and attempt ~= '' then
    local starts = redis.call('HINCRBY', tkey, 'starts:' .. attempt, 1)
    if starts > max_deliveries then
      local err = {type = 'WorkerLost', message = 'the task was interrupted ' .. (starts - 1) ..
        ' times by a lost worker; giving up'}
      local src = cjson.decode(ev)['source']
      ev = cjson.encode({id = eid, type = 'task.failed', ts = ts, task_id = task_id,
        user_id = (user_id ~= '' and user_id) or cjson.null, source = src, data = {error = err}})
      etype, status, sfield, ckey_hint = 'task.failed', 'failed', 'error', '-'
      svalue = cjson.encode(err)
      verdict = 'lost'
    end
  end
end
local chans = {}
if task_id ~= '' then chans[#chans + 1] = 'task:' .. task_id end
-- A task started by another task: its workflow's first task's channel carries it too.
if root_id ~= '' and root_id ~= task_id then chans[#chans + 1] = 'task:' .. root_id end
if topic ~= '' then chans[#chans + 1] = 'topic:' .. topic end
if user_id ~= '' then chans[#chans + 1] = 'user:' .. user_id end
local out = {verdict}
local task_seq = nil
for _, ch in ipairs(chans) do
  local ckey = P .. 'c:' .. ch
  local hkey = P .. 'h:' .. ch
  local seq = redis.call('HINCRBY', ckey, 'seq', 1)
  local epoch = redis.call('HGET', ckey, 'epoch')
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', ckey, 'epoch', epoch)
  end
  local msg = seq .. ' ' .. epoch .. ' ' .. now_ms .. ' ' .. ckey_hint .. '\\n' ..
    '{"type":"event","channel":"' .. ch .. '","seq":' .. seq .. ',"event":' .. ev .. '}'
  -- History is bounded by count (hsize) and by bytes (hbytes), oldest first. Invariant: the
  -- field `bytes` of the channel hash is the total length of the messages in its list, kept
  -- in step by this push and these pops (a list without it, or emptied, is counted afresh).
  -- Only LPOP trims, so the list always holds the last LLEN seqs: _READ's `first` holds.
  -- The newest message always stays, so a live subscriber can still be caught up to it.
  local len = redis.call('RPUSH', hkey, msg)
  local size = redis.call('HGET', ckey, 'bytes')
  if len == 1 then
    size = #msg
  elseif size then
    size = tonumber(size) + #msg
  else
    size = 0
    for _, kept in ipairs(redis.call('LRANGE', hkey, 0, -1)) do size = size + #kept end
  end
  while len > 1 and (len > hsize or size > hbytes) do
    size = size - #redis.call('LPOP', hkey)
    len = len - 1
  end
  redis.call('HSET', ckey, 'bytes', size)
  redis.call('EXPIRE', hkey, ttl)
  redis.call('EXPIRE', ckey, ttl)
  if publish then redis.call('PUBLISH', ch, msg) end
  if ch == 'task:' .. task_id then task_seq = seq end
  out[#out + 1] = ch
  out[#out + 1] = msg
end
if tkey and is_task_type then
  local cur = redis.call('HGET', tkey, 'status')
  if status ~= '' and not (status == 'queued' and cur and cur ~= 'queued') then
    redis.call('HSET', tkey, 'status', status)
  end
  if sfield ~= '' then redis.call('HSET', tkey, sfield, svalue) end
  if user_id ~= '' and not redis.call('HGET', tkey, 'owner') then
    redis.call('HSET', tkey, 'owner', user_id)
  end
end
if tkey and task_seq then
  redis.call('HSET', tkey, 'seq', task_seq, 'updated_at', ts)
  redis.call('EXPIRE', tkey, ttl)
end
-- Running and queued tasks, scored by their last sign of life, for the stale-task reaper.
if tkey and is_task_type then
  if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
    redis.call('ZREM', P .. 'running', task_id)
    redis.call('ZREM', P .. 'queued', task_id)
  elseif etype == 'task.queued' or etype == 'task.retrying' then
    -- Waiting for a worker (again): not running. Watched as queued only if its message is in
    -- the broker the reaper reads (the API's tasks); an app's own broker is its own business.
    if redis.call('HGET', tkey, 'checked') == '1' then
      redis.call('ZADD', P .. 'queued', now_s, task_id)
    end
    redis.call('ZREM', P .. 'running', task_id)
  else
    redis.call('ZADD', P .. 'running', now_s, task_id)
    redis.call('ZREM', P .. 'queued', task_id)
  end
end
if mkey then
  redis.call('SET', mkey, count, 'EX', tonumber(ARGV[16]))
elseif publish then
  redis.call('SET', dkey, '1', 'EX', tonumber(ARGV[16]))
else
  redis.call('SET', dkey, cjson.encode(out), 'EX', tonumber(ARGV[16]))
end
return out
"""

# A store that comes back with older data (an RDB snapshot after a crash, a restored backup, a
# promoted replica that lagged) would hand out seqs again that subscribers already had under
# the same epoch, and they would drop the new events as duplicates. Whoever remembers a
# position in a channel (a node: the last seq it fanned out; an emitter: the last it stored;
# a client resuming with `since` and `epoch`) is its witness: `epoch`, `seq` and, where known,
# the id of the event at `seq`. If the channel still has that epoch but its seq
# is below the witness's, or the event it holds at that seq is another one, the store went
# back in time: the channel gets `new_epoch` (stored, so every node and later subscriber
# agrees) and no seq is ever reused under one epoch. Returns the channel's epoch after it.
_REWIND_FN = """
local function event_id(entry)
  return string.match(entry, '"id":"(%x+)"') or ''
end
local function rewind(ckey, hkey, wepoch, wseq, wid, new_epoch, ttl)
  local epoch = redis.call('HGET', ckey, 'epoch')
  if not epoch or epoch ~= wepoch then return epoch, false end
  local seq = tonumber(redis.call('HGET', ckey, 'seq') or '0')
  local behind = seq < wseq
  if not behind and wid ~= '' and wseq > 0 then
    local len = redis.call('LLEN', hkey)
    local idx = wseq - (seq - len + 1)
    if idx >= 0 and idx < len then
      behind = event_id(redis.call('LINDEX', hkey, idx)) ~= wid
    end
  end
  if not behind then return epoch, false end
  redis.call('HSET', ckey, 'epoch', new_epoch)
  redis.call('EXPIRE', ckey, ttl)
  return new_epoch, true
end
"""

# Read a channel's seq and epoch (creating the epoch of a new channel), the id of its last
# event, the history after `since` (-1: none), and for task channels the task state, in one
# consistent snapshot; first, with a witness (ARGV[5..7]), the rewind check above.
# Returns {seq, epoch, first_seq_kept, state_flat, last_id, rewound, entry...}.
_READ = (
    _REWIND_FN
    + """
local ckey, hkey, tkey = KEYS[1], KEYS[2], KEYS[3]
local since, new_epoch = tonumber(ARGV[1]), ARGV[2]
local ttl, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local rewound = false
if ARGV[5] ~= '' then
  local _
  _, rewound = rewind(ckey, hkey, ARGV[5], tonumber(ARGV[6]), ARGV[7], new_epoch, ttl)
end
local seq = tonumber(redis.call('HGET', ckey, 'seq') or '0')
local epoch = redis.call('HGET', ckey, 'epoch')
if not epoch then
  epoch = new_epoch
  redis.call('HSET', ckey, 'epoch', epoch)
  redis.call('EXPIRE', ckey, ttl)
end
local len = redis.call('LLEN', hkey)
local first = seq - len + 1
local last_id = ''
if len > 0 then last_id = event_id(redis.call('LINDEX', hkey, -1)) end
local state = {}
if tkey ~= '' then state = redis.call('HGETALL', tkey) end
local out = {seq, epoch, first, state, last_id, rewound and 1 or 0}
if since >= 0 and since < seq and since + 1 >= first then
  local start = since + 1 - first
  local stop = -1
  if limit > 0 then stop = start + limit - 1 end
  local entries = redis.call('LRANGE', hkey, start, stop)
  for i = 1, #entries do out[#out + 1] = entries[i] end
end
return out
"""
)

# The rewind check for many channels at once (ARGV: new_epoch, ttl, then channel, epoch, seq,
# event id for each): what an emitter runs on a new connection before it stores anything on it.
# Returns the channels that got a new epoch.
REWIND = (
    _REWIND_FN
    + """
local P, new_epoch, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local moved = {}
for i = 3, #ARGV, 4 do
  local ch = ARGV[i]
  local _, rewound = rewind(P .. 'c:' .. ch, P .. 'h:' .. ch, ARGV[i + 1], tonumber(ARGV[i + 2]),
    ARGV[i + 3], new_epoch, ttl)
  if rewound then moved[#moved + 1] = ch end
end
return moved
"""
)

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
STATUS_OF = {
    "task.queued": "queued",
    "task.started": "running",
    "task.progress": "running",
    "task.retrying": "retrying",
    "task.succeeded": "succeeded",
    "task.failed": "failed",
    "task.cancelled": "cancelled",
}
STATE_FIELD_OF = {"task.progress": "progress", "task.succeeded": "result", "task.failed": "error"}


@dataclass(slots=True)
class Message:
    """One stored event on one channel, as carried by pub/sub and kept in history.

    Wire form: `"<seq> <epoch> <emit_ms> <coalesce_key>\\n<event frame JSON>"`, so a hub orders,
    deduplicates and coalesces without parsing JSON, and sends `frame` as is to every recipient.
    Never changed once parsed; not `frozen`, whose `__init__` would double the cost of
    parsing, which a node pays for every event it takes in.
    """

    seq: int
    epoch: str
    emitted_ms: int
    coalesce_key: str
    frame: str

    @classmethod
    def parse(cls, raw: str) -> Message:
        header, _, frame = raw.partition("\n")
        seq, epoch, emitted, key = header.split(" ", 3)
        return cls(int(seq), epoch, int(emitted), key if key != "-" else "", frame)


@dataclass(slots=True)
class Snapshot:
    """A channel's position and, for task channels, the task's state, read atomically."""

    seq: int
    epoch: str
    first_kept: int
    state: dict[str, Any] | None
    last_id: str = ""  # id of the event at `seq` ("": history holds none)
    rewound: bool = False  # the read found the store behind its witness: `epoch` is new
    entries: list[Message] = field(default_factory=list)
    recoverable: bool = True


Witness = tuple[str, int, str]
"""A position someone saw in a channel: (epoch, seq, id of the event at seq, or "")."""


def event_id(frame: str) -> str:
    """The event id in a stored message or frame (the first `"id"`: the envelope's own)."""
    start = frame.find('"id":"') + 6
    return frame[start : frame.index('"', start)] if start >= 6 else ""


def rewind_command(witnesses: dict[str, Witness], ttl: int) -> bytes:
    """The `REWIND` check of `witnesses` (channel -> position) as one raw `EVAL` command.

    `EVAL`, not `EVALSHA`: it runs first on a new connection, when Redis may have restarted
    and lost its script cache.
    """
    args: list[str | int] = [new_epoch(), ttl]
    for channel, (epoch, seq, eid) in witnesses.items():
        args += [channel, epoch, seq, eid]
    return command("EVAL", REWIND, 1, PREFIX, *args)


@dataclass(frozen=True, slots=True)
class Stored:
    """What `Store.append` did: the messages to publish, or why there are none."""

    status: str  # "ok", "dup", "closed", or "lost" (stored as task.failed: delivered too often)
    messages: list[tuple[str, str]]


def new_epoch() -> str:
    return new_id()[:12]


def _decode_state(flat: list[Any], task_id: str) -> dict[str, Any] | None:
    if not flat:
        return None
    raw = {_s(k): _s(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
    return task_state(task_id, raw)


def task_state(task_id: str, raw: dict[str, str]) -> dict[str, Any]:
    """The contract's `GET /tasks/{id}` body from the stored hash."""

    def load(name: str) -> Any:
        value = raw.get(name)
        return orjson.loads(value) if value else None

    progress = load("progress") or {"current": 0, "total": 0, "percent": 0.0, "message": None}
    return {
        "task_id": task_id,
        "status": raw.get("status", "queued"),
        "progress": progress,
        "result": load("result"),
        "error": load("error"),
        "seq": int(raw.get("seq", "0")),
        "updated_at": raw.get("updated_at") or raw.get("created_at"),
    }


class Store:
    """Async access to taskcast's Redis data; one per process (or per event-loop thread)."""

    def __init__(
        self,
        redis: Redis,
        *,
        history_size: int = 1000,
        history_ttl: int = 86400,
        history_max_bytes: int = 1024 * 1024,
        max_deliveries: int = 3,
        pipeline: Pipeline | None = None,
        publish: bool = False,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.redis = redis
        # Synchronous replication (`TASKCAST_REDIS_WAIT`): a batch is stored once this many
        # replicas confirm it, else `NotReplicated`. An `INCR` goes before the `WAIT`: a retried
        # batch that only finds its events stored writes nothing itself, and `WAIT` covers the
        # writes of its own connection only; the `INCR` moves that mark past the first attempt's.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.pipeline = pipeline  # a raw connection for `append_many` (the worker's hot path)
        # Publish each stored message from the store script itself (pub/sub on this same
        # Redis): one round trip per batch, and subscribers see every channel in seq order.
        self.publishes = publish
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.history_max_bytes = history_max_bytes  # per channel, of its stored messages
        self.max_deliveries = max_deliveries
        self._store = redis.register_script(_STORE)
        self._read = redis.register_script(_READ)

    def _args(
        self,
        event: dict[str, Any],
        encoded: bytes,
        topic: str | None,
        mark: str = "",
        count: int = 0,
    ) -> list[Any]:
        type_ = event["type"]
        sfield = STATE_FIELD_OF.get(type_, "")
        svalue = b""
        if sfield:
            key = {"progress": None, "result": "result", "error": "error"}[sfield]
            svalue = orjson.dumps(event["data"] if key is None else event["data"].get(key))
        coalesce = event["task_id"] if type_ == "task.progress" and event["task_id"] else "-"
        return [
            event["id"],
            encoded,
            type_,
            event["task_id"] or "",
            event["user_id"] or "",
            topic or "",
            new_epoch(),
            self.history_size,
            self.history_ttl,
            emitted_ms(event),
            STATUS_OF.get(type_, ""),
            sfield,
            svalue,
            event["ts"],
            coalesce,
            DEDUPE_TTL,
            event["data"].get("attempt", "") if type_ == "task.started" else "",
            self.max_deliveries,
            time.time(),
            "1" if self.publishes else "",
            mark,
            count,
            self.history_max_bytes,
            event.get("root_id") or "",
        ]

    async def append(self, event: dict[str, Any], encoded: bytes, topic: str | None) -> Stored:
        """Assign seqs on every target channel, keep history and task state: one atomic step."""
        if self.wait_replicas:  # the WAIT must go on the connection that stored the event
            return (await self.append_many([(event, encoded, topic)]))[0]
        out = await self._store(keys=[PREFIX], args=self._args(event, encoded, topic))
        return _stored(out)

    async def append_many(
        self,
        batch: list[tuple[dict[str, Any], bytes, str | None]],
        mark: tuple[str, int] | None = None,
    ) -> list[Stored]:
        """`append` for a batch in one pipelined round trip (the worker's publisher).

        `mark` is `(emitter mark, count of the batch's first event)` from an emitter whose
        events reach this store strictly one after another, each counted once (a retried
        batch keeps its counts): a store that publishes then dedupes by that count alone.

        Plain EVALSHA: a pipeline of `Script` objects asks `SCRIPT EXISTS` on every execute,
        a second round trip per batch. If Redis lost the script (a restart), load it and run
        the batch again: event ids (or counts) make the repeat harmless.
        """
        name, first = mark if mark is not None and self.publishes else ("", 0)
        args = [
            self._args(event, encoded, topic, name, first + i if name else 0)
            for i, (event, encoded, topic) in enumerate(batch)
        ]
        for attempt in range(2):
            try:
                if self.pipeline is not None:
                    results = await self._append_raw(self.pipeline, args)
                else:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for one in args:
                            pipe.evalsha(self._store.sha, 1, PREFIX, *one)
                        if self.wait_replicas:
                            pipe.incr(WAIT_MARK)
                            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                        results = await pipe.execute()
                if self.wait_replicas:
                    self._confirmed(int(results[-1]))
                    results = results[:-2]
                return [_stored(out) for out in results]
            except NoScriptError:
                if attempt:
                    raise
                await self.redis.script_load(_STORE)
        raise AssertionError("unreachable")

    def _confirmed(self, replicas: int) -> None:
        if replicas < self.wait_replicas:
            metrics.COUNTS.not_replicated += 1
            raise NotReplicated(replicas, self.wait_replicas, self.wait_timeout_ms)

    async def _append_raw(self, pipeline: Pipeline, args: list[list[Any]]) -> list[Any]:
        sha = self._store.sha
        commands = [command("EVALSHA", sha, 1, PREFIX, *one) for one in args]
        if self.wait_replicas:
            commands += [
                command("INCR", WAIT_MARK),
                command("WAIT", self.wait_replicas, self.wait_timeout_ms),
            ]
        replies = await pipeline.execute(commands)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                raise NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)
        return replies

    async def read(
        self,
        channel: str,
        since: int | None = None,
        limit: int = 0,
        witness: Witness | None = None,
    ) -> Snapshot:
        """Position, state and the history after `since` (`None`: none), `limit` entries at most.

        With a `witness`, a store found behind it first moves the channel to a new epoch.
        """
        tkey = f"{PREFIX}t:{channel[5:]}" if channel.startswith("task:") else ""
        wepoch, wseq, wid = witness if witness is not None else ("", 0, "")
        out = await self._read(
            keys=[f"{PREFIX}c:{channel}", f"{PREFIX}h:{channel}", tkey],
            args=[
                -1 if since is None else since,
                new_epoch(),
                self.history_ttl,
                limit,
                wepoch,
                wseq,
                wid,
            ],
        )
        seq, epoch, first, flat = int(out[0]), _s(out[1]), int(out[2]), out[3]
        state = _decode_state(flat, channel[5:]) if tkey else None
        snap = Snapshot(seq, epoch, first, state, _s(out[4]), bool(int(out[5])))
        if snap.rewound:
            metrics.COUNTS.store_rewinds += 1
            logger.warning("channel %s: Redis holds older data than was seen; new epoch", channel)
        if since is not None and since < seq:
            snap.entries = [Message.parse(_s(raw)) for raw in out[6:]]
            snap.recoverable = bool(snap.entries) and snap.entries[0].seq == since + 1
        elif since is not None and since > seq:
            snap.recoverable = False
        return snap

    async def create_task(
        self, task_id: str, owner: str, name: str, *, broker_checked: bool = True
    ) -> None:
        """Record a task's owner before it is enqueued: ownership decides who may watch it.

        `broker_checked`: its message goes to taskcast's own broker, where the reaper looks
        for it if it stays queued long (`Reaper`); an app's own broker is not read.
        """
        key = f"{PREFIX}t:{task_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"owner": owner, "name": name, "created_at": now_iso()})
            if broker_checked:
                pipe.hset(key, "checked", "1")
            pipe.expire(key, self.history_ttl)
            await pipe.execute()

    async def heartbeat(self, task_ids: list[str]) -> None:
        """A worker's sign of life for the tasks it is running (only those still running)."""
        if task_ids:
            now = time.time()
            await self.redis.zadd(RUNNING, dict.fromkeys(task_ids, now), xx=True)

    async def stale(self, before: float, limit: int = 100) -> list[str]:
        """Running tasks with no sign of life since `before` (epoch seconds)."""
        ids = await self.redis.zrangebyscore(RUNNING, "-inf", before, start=0, num=limit)
        return [_s(i) for i in ids]

    async def forget_running(self, task_id: str) -> None:
        await self.redis.zrem(RUNNING, task_id)
        await self.redis.zrem(QUEUED, task_id)

    async def stale_queued(self, before: float, limit: int = 100) -> list[str]:
        """Tasks still `queued` since before `before` (epoch seconds)."""
        ids = await self.redis.zrangebyscore(QUEUED, "-inf", before, start=0, num=limit)
        return [_s(i) for i in ids]

    async def still_waiting(self, task_ids: set[str]) -> None:
        """The broker still holds these queued tasks: look again after another full period."""
        if task_ids:
            await self.redis.zadd(QUEUED, dict.fromkeys(task_ids, time.time()), xx=True)

    async def lock(self, name: str, holder: str, ttl: float) -> bool:
        """A best-effort lease, so one node of many does a periodic job."""
        return bool(
            await self.redis.set(f"{PREFIX}lock:{name}", holder, nx=True, px=int(ttl * 1000))
        )

    async def count(self, name: str, amount: int = 1) -> None:
        """Add to a count every process shares (workers have no `/metrics` of their own)."""
        await self.redis.hincrby(SHARED_COUNTS, name, amount)

    async def counts(self) -> dict[str, int]:
        """The shared counts, for `/metrics`."""
        raw = await self.redis.hgetall(SHARED_COUNTS)
        return {_s(k): int(v) for k, v in raw.items()}

    async def task_owner(self, task_id: str) -> str | None:
        value = await self.redis.hget(f"{PREFIX}t:{task_id}", "owner")
        return _s(value) if value is not None else None

    async def task(self, task_id: str) -> tuple[str | None, dict[str, Any] | None]:
        """(owner, state) of a task, or (None, None) when Redis knows nothing of it."""
        raw = await self.redis.hgetall(f"{PREFIX}t:{task_id}")
        if not raw:
            return None, None
        decoded: dict[str, str] = {_s(k): _s(v) for k, v in raw.items()}
        return decoded.get("owner"), task_state(task_id, decoded)


def emitted_ms(event: dict[str, Any]) -> int:
    """Emit time in ms since the epoch, carried in the message header for the age histogram."""
    return int(datetime.fromisoformat(event["ts"]).timestamp() * 1000)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stored(out: list[Any]) -> Stored:
    status = _s(out[0])
    items = [_s(x) for x in out[1:]]
    return Stored(status, list(zip(items[::2], items[1::2], strict=True)))
