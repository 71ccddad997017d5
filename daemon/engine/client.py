"""A typed client for one vLLM OpenAI server: health, chat, runtime LoRA loading."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel

BASE_MODEL_NAME = "base"  # the name vLLM serves the base model under


class Completion(BaseModel):
    text: str
    finished: bool  # False when cut off by max_tokens


class EngineError(RuntimeError):
    """vLLM refused or failed an operation."""


class EngineClient:
    def __init__(self, url: str, timeout_s: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def healthy(self) -> bool:
        try:
            response = await self._http.get("/health", timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def loaded_models(self) -> list[str]:
        response = await self._http.get("/v1/models")
        response.raise_for_status()
        return [m["id"] for m in response.json()["data"]]

    async def load_adapter(self, name: str, path: str) -> bool:
        """Load ``name`` from ``path``; False when the engine had it loaded already."""
        response = await self._http.post(
            "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}
        )
        if response.status_code == 200:
            return True
        if "already been loaded" in response.text:
            return False
        raise EngineError(f"loading {name} from {path} failed: {response.text[:500]}")

    async def unload_adapter(self, name: str) -> None:
        response = await self._http.post("/v1/unload_lora_adapter", json={"lora_name": name})
        if response.status_code != 200 and response.status_code != 404:
            raise EngineError(f"unloading {name} failed: {response.text[:500]}")

    async def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        n: int = 1,
        stop: list[str] | None = None,
    ) -> list[Completion]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "n": n,
        }
        if stop:
            body["stop"] = stop
        response = await self._http.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            raise EngineError(f"chat on {model} failed: {response.text[:500]}")
        return [
            Completion(
                text=c["message"]["content"] or "", finished=c.get("finish_reason") != "length"
            )
            for c in response.json()["choices"]
        ]
