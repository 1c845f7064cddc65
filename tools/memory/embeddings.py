"""Embedding functions for the vector memory, registered with Chroma so a store reopens anywhere.

Chroma persists the *name* and *config* of a collection's embedding function and rebuilds it
from a registry when the collection is reopened, so every function here is decorated with
``@register_embedding_function`` and implements the full chromadb 1.x protocol (``__call__``,
``name()``, ``get_config()``, ``build_from_config()``). A process must import this module before
it opens a persisted collection; :mod:`patchpilot.tools.memory.store` does.

* :class:`HashingEmbeddingFunction` (``patchpilot-hashing``): deterministic feature hashing, no
  model, no download, no network. The default, for tests and air-gapped controllers.
* :class:`OpenAICompatEmbeddingFunction` (``patchpilot-openai``): ``/embeddings`` of any
  OpenAI-compatible endpoint (``llm.base_url`` + ``llm.embeddings_model``).

Chroma's own ``DefaultEmbeddingFunction`` is never used: it downloads an ONNX model from S3 on
first use and fails (or hangs) offline.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from patchpilot.core.errors import ConfigError
from patchpilot.tools.memory.errors import VectorMemoryError, VectorMemoryUnavailable

if TYPE_CHECKING:
    from patchpilot.core.settings import Settings

__all__ = [
    "HASHING_NAME",
    "OPENAI_NAME",
    "HashingEmbeddingFunction",
    "OpenAICompatEmbeddingFunction",
    "embedding_function",
    "features",
]

HASHING_NAME: Final = "patchpilot-hashing"
OPENAI_NAME: Final = "patchpilot-openai"

# Bumped whenever the tokeniser or the weights change: vectors of two versions must not be mixed,
# and the store refuses to open a memory whose persisted version differs.
_HASHING_VERSION: Final = 1
_DEFAULT_DIM: Final = 512
_MIN_DIM: Final = 16
_MAX_DIM: Final = 65_536

# A token is a run of letters/digits, possibly joined by the separators package names, versions
# and advisory ids use: "acme-web", "3.0.15", "1:2.36-9+deb12u7", "cve-2024-3094", "libssl3".
_TOKEN: Final = re.compile(r"[a-z0-9]+(?:[._:+~-][a-z0-9]+)*")
_SEPARATORS: Final = re.compile(r"[._:+~-]")
_VERSION_PREFIX: Final = re.compile(r"^\d+[.:]\d+")
_STOPWORDS: Final = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is"}
    | {"it", "its", "of", "on", "or", "the", "to", "was", "were", "with"}
)

_W_TOKEN: Final = 1.0
_W_PART: Final = 0.6
_W_VERSION_PREFIX: Final = 0.5
_W_BIGRAM: Final = 0.8
_W_TRIGRAM: Final = 0.25


def _tokens(text: str) -> list[str]:
    """Lower-case ``text`` and return its tokens, stopwords removed, in order."""
    return [tok for tok in _TOKEN.findall(text.lower()) if tok not in _STOPWORDS]


def features(text: str) -> Iterator[tuple[str, float]]:
    """Yield the weighted features hashed into a :class:`HashingEmbeddingFunction` vector.

    Features (prefixed by their type so they never collide):

    * ``w:`` every token, whole: ``w:acme-web``, ``w:3.0.15``, ``w:cve-2024-3094``;
    * ``p:`` the parts of a compound token: ``p:acme``, ``p:web``, so "acme web" still matches;
      pure-number parts shorter than four digits are skipped (``0``, ``15`` are noise);
    * ``v:`` the ``major.minor`` prefix of a version, so "openssl 3.0" finds "openssl 3.0.15";
    * ``b:`` word bigrams: ``b:health|check``;
    * ``c:`` character trigrams of alphabetic tokens, with boundaries: ``c:^op``, ``c:ssl``, for
      inflections and near-misses ("upgrade" / "upgraded", "libssl3" / "openssl").

    Args:
        text: Any text; case is ignored.

    Yields:
        ``(feature, weight)`` pairs; a feature may repeat (term frequency counts).
    """
    tokens = _tokens(text)
    for tok in tokens:
        yield f"w:{tok}", _W_TOKEN
        parts = [part for part in _SEPARATORS.split(tok) if part]
        if len(parts) > 1:
            for part in parts:
                if not part.isdigit() or len(part) >= 4:
                    yield f"p:{part}", _W_PART
        prefix = _VERSION_PREFIX.match(tok)
        if prefix and prefix.group(0) != tok:
            yield f"v:{prefix.group(0)}", _W_VERSION_PREFIX
        if not tok[0].isdigit() and len(tok) >= 3:
            padded = f"^{tok}$"
            for i in range(len(padded) - 2):
                yield f"c:{padded[i : i + 3]}", _W_TRIGRAM
    for left, right in itertools.pairwise(tokens):
        yield f"b:{left}|{right}", _W_BIGRAM


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """Return the (index, sign) a feature hashes to; blake2b is stable across processes."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return digest % dim, 1.0 if digest >> 63 else -1.0


@register_embedding_function
class HashingEmbeddingFunction(EmbeddingFunction[Documents]):
    """Deterministic, model-free embeddings: signed feature hashing, L2-normalised.

    Similar texts share tokens, bigrams and character trigrams (see :func:`features`), so their
    vectors have a high cosine similarity. Quality is far below a trained model, but it needs no
    download, no network and no GPU, and equal inputs give equal vectors in every process.

    Example:
        >>> ef = HashingEmbeddingFunction()
        >>> [vec] = ef(["openssl 3.0.15 -> 3.0.16"])
        >>> vec.shape
        (512,)
    """

    def __init__(self, dim: int = _DEFAULT_DIM) -> None:
        """Create the function.

        Args:
            dim: Vector size; larger means fewer hash collisions. Fixed for a memory's lifetime.

        Raises:
            ValueError: ``dim`` is outside 16..65536.
        """
        if not _MIN_DIM <= dim <= _MAX_DIM:
            raise ValueError(f"hashing embedding dim must be within {_MIN_DIM}..{_MAX_DIM}: {dim}")
        self.dim = dim

    def __call__(self, input: Documents) -> Embeddings:
        """Embed each document as a unit vector of ``dim`` float32 values."""
        return [self._embed(text) for text in input]

    def _embed(self, text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        vec = np.zeros(self.dim, dtype=np.float32)
        for feature, weight in features(text):
            index, sign = _bucket(feature, self.dim)
            vec[index] += sign * weight
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            # Text without a single token: a fixed unit vector rather than zeros, which cosine
            # distance cannot handle.
            index, sign = _bucket("e:", self.dim)
            vec[index] = sign
            return vec
        vec /= norm
        return vec

    @staticmethod
    def name() -> str:
        """The name Chroma persists and looks up in its registry."""
        return HASHING_NAME

    def get_config(self) -> dict[str, Any]:
        """The JSON config Chroma persists beside the collection."""
        return {"dim": self.dim, "version": _HASHING_VERSION}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashingEmbeddingFunction:
        """Rebuild the function from a persisted config (called by Chroma on reopen)."""
        HashingEmbeddingFunction.validate_config(config)
        return HashingEmbeddingFunction(dim=int(config["dim"]))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Refuse a config this code cannot reproduce (another tokeniser version)."""
        version = config.get("version")
        if version != _HASHING_VERSION:
            raise ValueError(
                f"{HASHING_NAME} embeddings version {version!r} cannot be reproduced by this "
                f"patchpilot (version {_HASHING_VERSION}); rebuild the memory"
            )
        if not isinstance(config.get("dim"), int):
            raise ValueError(f"{HASHING_NAME} config needs an integer 'dim': {config!r}")

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Refuse to change the dimension of an existing collection."""
        if "dim" in new_config and new_config["dim"] != old_config.get("dim"):
            raise ValueError(f"{HASHING_NAME}: 'dim' cannot change once vectors are stored")

    def default_space(self) -> Space:
        """Vectors are unit-length: cosine is the natural distance."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Unit vectors rank identically under all three spaces."""
        return ["cosine", "ip", "l2"]


@register_embedding_function
class OpenAICompatEmbeddingFunction(EmbeddingFunction[Documents]):
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama…).

    Unlike chromadb's bundled ``OpenAIEmbeddingFunction``, the API key is read from the named
    environment variable at call time (a dummy key when it is unset, for local servers), it is
    never persisted, and no client or connection is made before the first call. Gateway
    ``headers`` (``llm.headers``, already resolved) are sent on every request and never
    persisted either: a collection reopened from Chroma's registry alone has none.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 30.0,
        max_retries: int = 3,
        deadline: float = 30.0,
        max_response_bytes: int = 1024 * 1024,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Create the function.

        Args:
            base_url: The endpoint, e.g. ``http://127.0.0.1:8000/v1``.
            model: The embeddings model, e.g. ``text-embedding-3-small``.
            api_key_env: Environment variable holding the key.
            timeout: Seconds per request.
            max_retries: The openai client's retries on 429/5xx/timeouts.
            deadline: Seconds per call in total (every read and retry), as ``llm.deadline``.
            max_response_bytes: Largest answer accepted, as ``llm.max_response_bytes``.
            headers: Extra HTTP headers (``llm.headers`` with ``${ENV:NAME}`` resolved).
        """
        self._headers = dict(headers or {})
        self.deadline = deadline
        self.max_response_bytes = max_response_bytes
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self._client: Any = None

    def __call__(self, input: Documents) -> Embeddings:
        """Embed the documents with one request.

        Raises:
            VectorMemoryUnavailable: The endpoint could not be reached.
            VectorMemoryError: The endpoint answered with an error.
        """
        import time

        import openai

        from patchpilot.tools.llm.transport import deadline_scope, make_http_client

        if not input:
            return []
        if self._client is None:
            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or "local",
                timeout=self.timeout,
                max_retries=self.max_retries,
                default_headers=self._headers or None,
                http_client=make_http_client(
                    max_response_bytes=self.max_response_bytes, timeout=self.timeout
                ),
            )
        try:
            with deadline_scope(time.monotonic() + self.deadline):
                response = self._client.embeddings.create(model=self.model, input=list(input))
        except openai.APIConnectionError as exc:
            raise VectorMemoryUnavailable(
                self.base_url, f"embeddings endpoint unreachable: {exc}; is the server up?"
            ) from exc
        except openai.APIError as exc:
            raise VectorMemoryError(
                self.base_url, f"embeddings with model {self.model!r} failed: {exc}"
            ) from exc
        data = sorted(response.data, key=lambda item: item.index)
        return [np.asarray(item.embedding, dtype=np.float32) for item in data]

    @staticmethod
    def name() -> str:
        """The name Chroma persists and looks up in its registry."""
        return OPENAI_NAME

    def get_config(self) -> dict[str, Any]:
        """The JSON config Chroma persists (never the key itself)."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "deadline": self.deadline,
            "max_response_bytes": self.max_response_bytes,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OpenAICompatEmbeddingFunction:
        """Rebuild the function from a persisted config (called by Chroma on reopen)."""
        OpenAICompatEmbeddingFunction.validate_config(config)
        return OpenAICompatEmbeddingFunction(
            base_url=str(config["base_url"]),
            model=str(config["model"]),
            api_key_env=str(config.get("api_key_env", "OPENAI_API_KEY")),
            timeout=float(config.get("timeout", 30.0)),
            deadline=float(config.get("deadline", 30.0)),
            max_response_bytes=int(config.get("max_response_bytes", 1024 * 1024)),
            max_retries=int(config.get("max_retries", 3)),
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Require the endpoint and the model."""
        missing = [key for key in ("base_url", "model") if not config.get(key)]
        if missing:
            raise ValueError(f"{OPENAI_NAME} config lacks {', '.join(missing)}: {config!r}")

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Refuse to change the model of an existing collection."""
        if "model" in new_config and new_config["model"] != old_config.get("model"):
            raise ValueError(f"{OPENAI_NAME}: 'model' cannot change once vectors are stored")

    def default_space(self) -> Space:
        """OpenAI-style embeddings are compared by cosine."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """All spaces work; cosine is recommended."""
        return ["cosine", "ip", "l2"]


def embedding_function(settings: Settings) -> EmbeddingFunction[Documents]:
    """Return the embedding function ``settings.memory.embedding`` selects.

    Args:
        settings: patchpilot's settings; ``openai`` also reads ``llm.base_url``,
            ``llm.embeddings_model``, ``llm.api_key_env``, ``llm.timeout``,
            ``llm.max_retries`` and ``llm.headers``.

    Raises:
        ConfigError: ``openai`` is selected but the endpoint or the model is unset, or a
            header of ``llm.headers`` names an unset environment variable.
    """
    if settings.memory.embedding == "hashing":
        return HashingEmbeddingFunction()
    llm = settings.llm
    if llm.base_url is None or llm.embeddings_model is None:
        raise ConfigError(
            "the 'openai' embedding needs llm.base_url and llm.embeddings_model (e.g. "
            "PATCHPILOT_LLM__BASE_URL and PATCHPILOT_LLM__EMBEDDINGS_MODEL); set both, or use "
            "memory.embedding=hashing",
            key="memory.embedding",
        )
    return OpenAICompatEmbeddingFunction(
        base_url=llm.base_url,
        model=llm.embeddings_model,
        api_key_env=llm.api_key_env,
        timeout=llm.timeout,
        max_retries=llm.max_retries,
        deadline=llm.deadline,
        max_response_bytes=llm.max_response_bytes,
        headers=llm.resolved_headers(os.environ),
    )
