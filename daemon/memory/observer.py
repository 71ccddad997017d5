"""Turn served requests into passage observations, off the request path.

The proxy hands each successful request's messages to ``submit``, which never
blocks and does no work on the request path: a full queue drops the observation
and counts it. A worker task derives the conversation key and does the
redaction, passage reading and Redis writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from daemon.config import ObserverConfig
from daemon.memory.language import Language
from daemon.memory.passages import split_passages, statements
from daemon.memory.recording import Observation, ObservedPassage
from daemon.memory.redact import MARKER, redact_counted
from daemon.memory.segment import fact_id
from daemon.memory.store import Store

log = logging.getLogger("memoryd.observer")

CONTEXT_ROLES = ("system", "developer", "user", "tool")
QUESTION_MAX_CHARS = 300


class ObserverStats(BaseModel):
    observed: int = 0
    dropped: int = 0
    failed: int = 0
    retried: int = 0
    facts_written: int = 0
    redacted: int = 0  # secrets and personal data replaced before anything was stored
    statements_dropped: int = 0  # statements whose point was a redacted value


def message_text(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def conversation_key(messages: list[dict[str, Any]], explicit: str | None) -> str:
    """Names a conversation: stable as it grows, so re-sent history counts once.

    Derived from the system prompt(s) and the first user message unless the
    client names it with ``X-Conversation-Id`` (the ``user`` field names an end
    user, who has many conversations).
    """
    if explicit:
        return "id:" + explicit
    head: list[str] = []
    for m in messages:
        head.append(f"{m.get('role')}:{message_text(m.get('content'))}")
        if m.get("role") == "user":
            break
    return hashlib.sha256(json.dumps(head).encode()).hexdigest()[:24]


def context_of(
    messages: list[dict[str, Any]], redacted: Counter[str] | None = None
) -> tuple[list[tuple[str, str]], str | None]:
    """The request's passages (id, text) and the question asked of them, redacted.

    System, developer and tool messages are context. A user message is the
    question when it is the last one and short; a long user message carries
    pasted material and is context; earlier short user turns are chat, not
    memory. What was redacted is counted by kind into ``redacted``.
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    question = None
    found: dict[str, str] = {}
    for i, m in enumerate(messages):
        if m.get("role") not in CONTEXT_ROLES:
            continue
        clean = redact_counted(message_text(m.get("content")))
        if redacted is not None:
            redacted.update(clean.counts)
        text = clean.text
        if m.get("role") == "user" and len(text) <= QUESTION_MAX_CHARS:
            if i == last_user:
                question = text.strip() or None
            continue
        for passage in split_passages(text):
            found.setdefault(fact_id(passage), passage)
    return list(found.items()), question


async def observe(
    store: Store,
    lang: Language,
    messages: list[dict[str, Any]],
    conversation: str,
    cfg: ObserverConfig,
) -> Observation:
    """The observation of one request: passages already known are only counted, new ones read."""
    redacted: Counter[str] = Counter()
    found, question = context_of(messages, redacted)
    known = await store.known_passages([pid for pid, _ in found])
    passages = []
    dropped = 0
    for pid, text in found:
        if pid in known:
            passages.append(ObservedPassage(pid, text, None))
            continue
        read = await asyncio.to_thread(statements, lang, text, cfg.min_chars, cfg.max_chars)
        # "The admin password is [REDACTED]" could only teach the placeholder: not learned.
        extracted = [s for s in read if MARKER not in s.text and MARKER not in s.source]
        dropped += len(read) - len(extracted)
        if extracted:  # a passage that states nothing ("You are a helpful assistant.") is not kept
            passages.append(ObservedPassage(pid, text, extracted))
    return Observation(conversation, passages, question, redacted, dropped)


class Observer:
    def __init__(self, store: Store, cfg: ObserverConfig, lang: Language) -> None:
        self.store = store
        self.lang = lang
        self.cfg = cfg
        self.queue: asyncio.Queue[tuple[list[dict[str, Any]], str | None, Store]] = asyncio.Queue(
            cfg.queue_size
        )
        self.stats = ObserverStats()
        self.redacted: Counter[str] = Counter()  # by kind, never the values
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def submit(
        self, messages: list[dict[str, Any]], explicit: str | None, store: Store | None = None
    ) -> None:
        """Queue a request's messages (as sent) and the conversation id its client gave.

        ``store``: the memory of the request's tenant (default: the default tenant's).
        """
        try:
            self.queue.put_nowait((messages, explicit, store or self.store))
        except asyncio.QueueFull:
            self.stats.dropped += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="observer")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Write out what is queued, then stop; what Redis cannot take in `grace_s` is failed."""
        if self._task:
            try:
                await asyncio.wait_for(self.queue.join(), grace_s)
            except TimeoutError:
                self.stats.failed += self.queue.qsize() + 1
                log.warning("stopped with %d observations not written", self.queue.qsize() + 1)
            self._task.cancel()

    async def _work(self) -> None:
        while True:
            messages, explicit, store = await self.queue.get()
            try:
                await self._observe(messages, explicit, store)
            finally:
                self.queue.task_done()

    async def _observe(
        self, messages: list[dict[str, Any]], explicit: str | None, store: Store
    ) -> None:
        """Record one request, retrying while Redis is unreachable (a restart takes seconds).

        The write is one transaction, so a retry never counts an observation twice.
        Only after `retry_s` of outage is the observation counted as failed.
        """
        key = conversation_key(messages, explicit)
        deadline = time.monotonic() + self.cfg.retry_s
        delay = 0.2
        while True:
            try:
                obs = await observe(store, self.lang, messages, key, self.cfg)
                await store.record(obs, self.cfg.questions_kept)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if not self._failing:  # once per outage, not once per request
                    log.warning("Redis unreachable; retrying observations", exc_info=True)
                self._failing = True
                if time.monotonic() + delay > deadline:
                    self.stats.failed += 1
                    return
                self.stats.retried += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:  # a bad request must not stop observing later ones
                self.stats.failed += 1
                log.warning("observation not recorded", exc_info=True)
                return
            self.stats.observed += 1
            self.stats.facts_written += sum(len(p.statements or []) for p in obs.passages)
            self.stats.redacted += obs.redacted.total()
            self.stats.statements_dropped += obs.dropped
            self.redacted.update(obs.redacted)
            if self._failing:
                log.warning("observations are recorded again")
            self._failing = False
            return
