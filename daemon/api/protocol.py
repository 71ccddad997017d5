"""Pydantic mirrors of the OpenAI request fields memoryd itself reads.

Only what memoryd needs to check or route is modelled; every other field is
kept as sent (``extra="allow"``) and validated by vLLM, whose errors pass
through unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class MemorydOptions(BaseModel):
    """The request extension ``"memoryd": {...}``: memoryd's own per-request options."""

    model_config = ConfigDict(extra="forbid")

    learn: bool = True  # false: nothing of this request is observed or stored


class CompletionBase(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # the end user, as in OpenAI's API; not a conversation id
    memoryd: MemorydOptions | None = None
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class ChatCompletionRequest(CompletionBase):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(CompletionBase):
    prompt: str | list[str] | list[int] | list[list[int]]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "memoryd"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
