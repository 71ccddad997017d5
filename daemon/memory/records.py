"""The records memoryd keeps in Redis and in adapter manifests."""

from __future__ import annotations

import time
from enum import Enum

from pydantic import BaseModel, Field


def now() -> float:
    return time.time()


class FactStatus(str, Enum):
    """pending -> consolidated (in vN) -> forgotten; or replaced by a newer statement."""

    pending = "pending"
    consolidated = "consolidated"
    forgotten = "forgotten"  # by the operator, or not seen for facts.ttl_days
    replaced = "replaced"  # a newer statement about the same subject says otherwise

    @property
    def active(self) -> bool:
        return self in (FactStatus.pending, FactStatus.consolidated)


class Passage(BaseModel):
    """A block of context that recurs (a system prompt, a pasted document, a section of one)."""

    id: str
    text: str
    first_seen: float
    last_seen: float
    hits: int = 0
    conversations: int = 0
    redacted: int = Field(0, description="secrets and personal data replaced in its text")
    status: FactStatus = FactStatus.pending
    version: int | None = Field(None, description="adapter version it was consolidated into")
    reason: str | None = Field(None, description="why it was forgotten")
    fact_ids: list[str] = Field(default_factory=list, description="its statements, in order")
    questions: list[str] = Field(
        default_factory=list, description="user questions asked with it in context (latest first)"
    )


class Fact(BaseModel):
    """A statement of a passage, references resolved so that it is true on its own."""

    id: str
    text: str
    source: str | None = Field(None, description="the sentence as written in its passage")
    passage: str | None = Field(None, description="id of the passage it was first read in")
    first_seen: float
    last_seen: float
    hits: int = 0
    conversations: int = 0
    status: FactStatus = FactStatus.pending
    version: int | None = Field(None, description="adapter version it was consolidated into")
    variants: list[str] = Field(
        default_factory=list, description="other wordings seen, merged into this fact"
    )
    reason: str | None = Field(None, description="why it was forgotten or replaced")
    replaced_by: str | None = Field(None, description="the newer fact that contradicts it")
    replaces: str | None = Field(None, description="the older fact it contradicts")
    pinned: bool = Field(False, description="never forgotten for not being seen (ttl_days)")


class RunState(str, Enum):
    """queued -> running -> passed -> promoted, or rejected, or failed (daemon.memory.lifecycle)."""

    queued = "queued"  # made by the daemon, no worker has claimed it yet
    running = "running"
    passed = "passed"  # its gates passed; it serves once the daemon promotes it
    promoted = "promoted"
    rejected = "rejected"
    failed = "failed"

    @property
    def settled(self) -> bool:
        """Nothing more happens to the run."""
        return self in (RunState.promoted, RunState.rejected, RunState.failed)


class Step(BaseModel):
    name: str
    started_at: float
    seconds: float | None = None
    detail: dict[str, object] = Field(default_factory=dict)


class GateResult(BaseModel):
    name: str
    value: float
    threshold: float
    passed: bool
    judged: bool = True  # false: nothing to measure (no held-out question), passed unjudged


class Consolidation(BaseModel):
    """One consolidation run; its id is also the version of the adapter it makes."""

    id: int
    trigger: str
    state: RunState = RunState.queued
    started_at: float = Field(default_factory=now)
    finished_at: float | None = None
    passage_ids: list[str] = Field(default_factory=list)
    fact_ids: list[str] = Field(default_factory=list)
    fingerprint: str = Field(
        "", description="names what it learns; its fact set's tries are counted under it"
    )
    adapter: str | None = None
    adapter_path: str | None = None
    steps: list[Step] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    gates: list[GateResult] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    error: str | None = None


class AdapterManifest(BaseModel):
    """Written next to the adapter weights; an adapter without one is never loaded."""

    version: int
    name: str
    base_model: str
    created_at: float
    passage_ids: list[str] = Field(default_factory=list)
    fact_ids: list[str]
    facts: list[str]
    routing: str | None = Field(
        None, description="file of the statements' embeddings that route a conversation here"
    )
    examples: dict[str, int]
    training: dict[str, object]
    metrics: dict[str, float]
    files: dict[str, str] = Field(description="file name -> sha256")
