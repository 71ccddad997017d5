"""The operator's view of memory: passages and the facts read in them; forgetting."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from daemon.api.errors import APIError
from daemon.api.tenancy import tenant
from daemon.memory.records import Fact, FactStatus, Passage
from daemon.retirement import Retired, retire

router = APIRouter(prefix="/admin")


class FactList(BaseModel):
    total: int
    facts: list[Fact]


class PassageList(BaseModel):
    total: int
    passages: list[Passage]


class PassageDetail(Passage):
    facts: list[Fact] = Field(description="its statements, references resolved")


class ForgetMatching(BaseModel):
    match: str = Field(min_length=3, description="text the facts to forget contain (any case)")
    now: bool = Field(False, description="retire the serving adapter at once if it holds them")


class ForgottenFact(Fact):
    retirement: Retired


class ForgottenPassage(PassageDetail):
    retirement: Retired


class ForgottenFacts(FactList):
    retirement: Retired


NOW = Query(
    False,
    description="retire the serving adapter at once if it holds what is forgotten "
    "(the previous clean adapter or the base model serves); by default it serves "
    "until the next consolidation's adapter replaces it",
)
REASON = "forgotten by the operator"


async def _retire(request: Request, now: bool) -> Retired:
    own = tenant(request)
    return await retire(own.scope, own.store, own.swapper, now)


@router.get("/passages", response_model=PassageList)
async def passages(
    request: Request,
    limit: int = Query(100, ge=1, le=10_000),
    offset: int = Query(0, ge=0),
    status: FactStatus | None = None,
) -> PassageList:
    svc = tenant(request)
    items = await svc.store.passages(limit=limit, offset=offset)
    if status:
        items = [p for p in items if p.status == status]
    return PassageList(total=await svc.store.count_passages(), passages=items)


@router.get("/passages/{passage_id}", response_model=PassageDetail)
async def passage(request: Request, passage_id: str) -> PassageDetail:
    store = tenant(request).store
    found = await store.passage(passage_id)
    if found is None:
        raise APIError(
            404, f"no passage {passage_id}", param="passage_id", code="passage_not_found"
        )
    return PassageDetail(**found.model_dump(), facts=await store.facts_by_id(found.fact_ids))


@router.delete("/passages/{passage_id}", response_model=ForgottenPassage)
async def forget_passage(request: Request, passage_id: str, now: bool = NOW) -> ForgottenPassage:
    """Forget the passage and every statement read in it: their words leave Redis, and
    every adapter holding them is deleted."""
    found = await passage(request, passage_id)
    await tenant(request).store.forget_passage(found, REASON)
    retired = await _retire(request, now)
    return ForgottenPassage(**(await passage(request, passage_id)).model_dump(), retirement=retired)


@router.get("/facts", response_model=FactList)
async def facts(
    request: Request,
    limit: int = Query(100, ge=1, le=10_000),
    offset: int = Query(0, ge=0),
    status: FactStatus | None = None,
    q: str | None = Query(None, description="only facts whose text contains this (any case)"),
) -> FactList:
    svc = tenant(request)
    items = await svc.store.facts(limit=limit, offset=offset)
    if status:
        items = [f for f in items if f.status == status]
    if q:
        items = [f for f in items if q.casefold() in f.text.casefold()]
    return FactList(total=await svc.store.count_facts(), facts=items)


@router.get("/facts/{fact_id}", response_model=Fact)
async def fact(request: Request, fact_id: str) -> Fact:
    found = await tenant(request).store.fact(fact_id)
    if found is None:
        raise APIError(404, f"no fact {fact_id}", param="fact_id", code="fact_not_found")
    return found


@router.delete("/facts/{fact_id}", response_model=ForgottenFact)
async def forget(request: Request, fact_id: str, now: bool = NOW) -> ForgottenFact:
    """Forget the fact: its words leave Redis and its passage's teaching, and every adapter
    holding it is deleted."""
    found = await fact(request, fact_id)
    if found.status != FactStatus.forgotten:
        await tenant(request).store.forget_facts([found], REASON)
    return ForgottenFact(**found.model_dump(), retirement=await _retire(request, now))


@router.put("/facts/{fact_id}/pin", response_model=Fact)
async def pin(request: Request, fact_id: str) -> Fact:
    """Keep a fact however long it goes unseen: it never decays."""
    return await _set_pinned(request, fact_id, True)


@router.delete("/facts/{fact_id}/pin", response_model=Fact)
async def unpin(request: Request, fact_id: str) -> Fact:
    return await _set_pinned(request, fact_id, False)


async def _set_pinned(request: Request, fact_id: str, pinned: bool) -> Fact:
    found = await fact(request, fact_id)
    await tenant(request).store.set_pinned(fact_id, pinned)
    found.pinned = pinned
    return found


@router.post("/facts/forget", response_model=ForgottenFacts)
async def forget_matching(request: Request, body: ForgetMatching) -> ForgottenFacts:
    """Forget every fact whose text contains ``match`` (the match is not recorded)."""
    forgotten = await tenant(request).store.forget_matching(body.match, REASON)
    if not forgotten:
        raise APIError(
            404, f"no fact to forget contains {body.match!r}", param="match", code="fact_not_found"
        )
    retired = await _retire(request, body.now)
    return ForgottenFacts(total=len(forgotten), facts=forgotten, retirement=retired)
