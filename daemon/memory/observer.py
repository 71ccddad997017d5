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
from typing import Any, NamedTuple

from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from daemon.config import ObserverConfig
from daemon.memory.language import Language
from daemon.memory.passages import split_passages, statements
from daemon.memory.redact import redact_counted
from daemon.memory.segment import fact_id
from daemon.memory.store import Observation, ObservedPassage, Store

log = logging.getLogger("memoryd.observer")

CONTEXT_ROLES = ("system", "developer", "user", "tool")
QUESTION_MAX_CHARS = 300


class ObserverStats(BaseModel):
    observed: int = 0
    dropped: int = 0
    failed: int = 0
    retried: int = 0
    facts_written: int = 0
    redacted: int = 0


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
    client names it (``user`` field or ``X-Conversation-Id``).
    """
    if explicit:
        return "id:" + explicit
    head: list[str] = []
    for m in messages:
        head.append(f"{m.get('role')}:{message_text(m.get('content'))}")
        if m.get("role") == "user":
            break
    return hashlib.sha256(json.dumps(head).encode()).hexdigest()[:24]


class Context(NamedTuple):
    passages: list[tuple[str, str]]  # (id, text)
    question: str | None
    redacted: int  # secrets and personal data taken out


def context_of(messages: list[dict[str, Any]]) -> Context:
    """The request's passages (id, text) and the question asked of them.

    System, developer and tool messages are context. A user message is the
    question when it is the last one and short; a long user message carries
    pasted material and is context; earlier short user turns are chat, not
    memory.
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    question = None
    found: dict[str, str] = {}
    redacted = 0
    for i, m in enumerate(messages):
        if m.get("role") not in CONTEXT_ROLES:
            continue
        text, n = redact_counted(message_text(m.get("content")))
        redacted += n
        if m.get("role") == "user" and len(text) <= QUESTION_MAX_CHARS:
            if i == last_user:
                question = text.strip() or None
            continue
        for passage in split_passages(text):
            found.setdefault(fact_id(passage), passage)
    return Context(list(found.items()), question, redacted)


async def observe(
    store: Store,
    lang: Language,
    messages: list[dict[str, Any]],
    conversation: str,
    cfg: ObserverConfig,
) -> Observation:
    """The observation of one request: passages already known are only counted, new ones read."""
    found, question, redacted = context_of(messages)
    known = await store.known_passages([pid for pid, _ in found])
    passages = []
    for pid, text in found:
        if pid in known:
            passages.append(ObservedPassage(pid, text, None))
            continue
        extracted = await asyncio.to_thread(statements, lang, text, cfg.min_chars, cfg.max_chars)
        if extracted:  # a passage that states nothing ("You are a helpful assistant.") is not kept
            passages.append(ObservedPassage(pid, text, extracted))
    return Observation(conversation, passages, question, redacted)


class Observer:
    def __init__(self, store: Store, cfg: ObserverConfig, lang: Language) -> None:
        self.store = store
        self.lang = lang
        self.cfg = cfg
        self.queue: asyncio.Queue[tuple[list[dict[str, Any]], str | None]] = asyncio.Queue(
            cfg.queue_size
        )
        self.stats = ObserverStats()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def submit(self, messages: list[dict[str, Any]], explicit: str | None) -> None:
        """Queue a request's messages (as sent) and the conversation id its client gave."""
        try:
            self.queue.put_nowait((messages, explicit))
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
            messages, explicit = await self.queue.get()
            try:
                await self._observe(messages, explicit)
            finally:
                self.queue.task_done()

    async def _observe(self, messages: list[dict[str, Any]], explicit: str | None) -> None:
        """Record one request, retrying while Redis is unreachable (a restart takes seconds).

        The write is one transaction, so a retry never counts an observation twice.
        Only after `retry_s` of outage is the observation counted as failed.
        """
        key = conversation_key(messages, explicit)
        deadline = time.monotonic() + self.cfg.retry_s
        delay = 0.2
        while True:
            try:
                obs = await observe(self.store, self.lang, messages, key, self.cfg)
                await self.store.record(obs, self.cfg.questions_kept)
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
            self.stats.redacted += obs.redacted
            self.stats.facts_written += sum(len(p.statements or []) for p in obs.passages)
            if self._failing:
                log.warning("observations are recorded again")
            self._failing = False
            return
