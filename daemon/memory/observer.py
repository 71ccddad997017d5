"""Turn served requests into fact observations, off the request path.

The proxy hands each successful request's messages to ``submit``, which never
blocks and does no work on the request path: a full queue drops the observation
and counts it. A worker task derives the conversation key and does the
segmentation, redaction and Redis writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from pydantic import BaseModel

from daemon.config import ObserverConfig
from daemon.memory.redact import redact
from daemon.memory.segment import fact_id, segment
from daemon.memory.store import Observation, Store

log = logging.getLogger("memoryd.observer")

CONTEXT_ROLES = ("system", "developer", "user", "tool")
QUESTION_MAX_CHARS = 300


class ObserverStats(BaseModel):
    observed: int = 0
    dropped: int = 0
    failed: int = 0
    facts_written: int = 0


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


def observe(messages: list[dict[str, Any]], conversation: str, cfg: ObserverConfig) -> Observation:
    """Segment the context; a short last user message is the question asked of it.

    The last user message is the query, not context, unless it is long enough
    to carry pasted material (then it is segmented and no question is kept).
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    question = None
    facts: dict[str, str] = {}
    for i, m in enumerate(messages):
        if m.get("role") not in CONTEXT_ROLES:
            continue
        text = redact(message_text(m.get("content")))
        if i == last_user and len(text) <= QUESTION_MAX_CHARS:
            question = text.strip() or None
            continue
        for piece in segment(text, cfg.min_chars, cfg.max_chars):
            facts.setdefault(fact_id(piece), piece)
    return Observation(conversation, list(facts.items()), question)


class Observer:
    def __init__(self, store: Store, cfg: ObserverConfig) -> None:
        self.store = store
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

    async def stop(self) -> None:
        """Write out what is queued, then stop."""
        if self._task:
            await self.queue.join()
            self._task.cancel()

    async def _work(self) -> None:
        while True:
            messages, explicit = await self.queue.get()
            try:
                obs = observe(messages, conversation_key(messages, explicit), self.cfg)
                await self.store.record(obs, self.cfg.questions_kept)
                self.stats.observed += 1
                self.stats.facts_written += len(obs.facts)
                if self._failing:
                    log.warning("observations are recorded again")
                self._failing = False
            except Exception:  # Redis down must not stop observing later requests
                self.stats.failed += 1
                if not self._failing:  # once per outage, not once per request
                    log.warning("observation not recorded; counting failures", exc_info=True)
                self._failing = True
            finally:
                self.queue.task_done()
