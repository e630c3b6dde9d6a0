"""chromadb's ``OpenAIEmbeddingFunction`` (registered as ``"openai"``), over plain httpx.

Same parameters and stored config as chromadb 1.5.9's, so a collection chromadb created with it
reopens here (and the other way round). ``api_base`` points it at any OpenAI-compatible
``/embeddings`` endpoint (Ollama, vLLM, TEI, LiteLLM...). The key is never stored: the config holds
the name of the environment variable (``api_key_env_var``), read at the first embed, so a
collection opens for reading on a host without the key.

Requests carry at most ``batch_size`` inputs (a runtime option; OpenAI takes 2048 per request).
A 429, a 5xx or a dropped connection is retried ``max_retries`` times with exponential backoff
(honouring ``Retry-After``); any other error answer raises at once with the server's message.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from embedders.base import BaseEmbeddingFunction
from embedders.errors import ConfigError, EmbeddingCountError, ModelUnavailableError

__all__ = ["OpenAIEmbeddingFunction"]

OPENAI_API_BASE = "https://api.openai.com/v1"
_RETRY_STATUSES = (429, 500, 502, 503, 504)
_MAX_WAIT = 20.0  # seconds: the longest single back-off, whatever Retry-After asks


class OpenAIEmbeddingFunction(BaseEmbeddingFunction):
    """Text embeddings from OpenAI's (or an OpenAI-compatible server's) ``/embeddings`` endpoint.

    Args:
        api_key: the key itself; not persisted (chromadb warns the same): prefer ``api_key_env_var``.
        model_name: the model, e.g. ``text-embedding-3-small``.
        organization_id: sent as ``OpenAI-Organization``.
        api_base: the API's base URL (default OpenAI's), e.g. ``http://localhost:11434/v1`` for Ollama.
        api_type: ``"azure"`` for Azure OpenAI (then ``api_version``, ``deployment_id`` and
            ``api_base`` are required).
        api_version: Azure's ``api-version``.
        deployment_id: Azure's deployment.
        default_headers: extra headers sent with every request.
        dimensions: the vector size to ask for (``text-embedding-3`` models, or any ``api_base``).
        api_key_env_var: the environment variable holding the key (stored in the collection).
        batch_size: inputs per request (runtime option, not stored).
        max_retries: retries of a request after a 429, 5xx or connection failure (runtime option).
        timeout: seconds per request (runtime option).

    Example:
        >>> ef = OpenAIEmbeddingFunction(model_name="text-embedding-3-small", api_key_env_var="MY_KEY")
        >>> ef.name(), ef.get_config()["api_key_env_var"]
        ('openai', 'MY_KEY')
    """

    CONFIG_KEYS = ("api_key_env_var", "model_name", "organization_id", "api_base", "api_type", "api_version",
                   "deployment_id", "default_headers", "dimensions")
    RUNTIME_OPTIONS = ("batch_size", "max_retries", "timeout")
    MODALITIES = frozenset({"text"})

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = "text-embedding-ada-002",
        organization_id: str | None = None,
        api_base: str | None = None,
        api_type: str | None = None,
        api_version: str | None = None,
        deployment_id: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        dimensions: int | None = None,
        api_key_env_var: str = "CHROMA_OPENAI_API_KEY",
        *,
        batch_size: int = 2048,
        max_retries: int = 3,
        timeout: float = 60.0,
    ) -> None:
        if api_key is not None:
            warnings.warn(
                "Direct api_key configuration will not be persisted. Please use environment variables via "
                "api_key_env_var for persistent storage.",
                DeprecationWarning,
                stacklevel=2,
            )
        if api_key_env_var == "CHROMA_OPENAI_API_KEY" and os.getenv("OPENAI_API_KEY") is not None:
            api_key_env_var = "OPENAI_API_KEY"  # chromadb prefers OpenAI's own variable when it is set
        if not isinstance(model_name, str) or not model_name:
            raise ConfigError(f"model_name must be a non-empty string; got {model_name!r}")
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
            raise ConfigError(f"dimensions must be a positive integer or None; got {dimensions!r}")
        if api_type == "azure":
            missing = [k for k, v in (("api_version", api_version), ("deployment_id", deployment_id),
                                      ("api_base", api_base)) if v is None]
            if missing:
                raise ConfigError(f"Azure OpenAI (api_type='azure') needs {', '.join(missing)}")
        self.api_key_env_var = api_key_env_var
        self.model_name = model_name
        self.organization_id = organization_id
        self.api_base = api_base
        self.api_type = api_type
        self.api_version = api_version
        self.deployment_id = deployment_id
        self.default_headers = dict(default_headers) if default_headers else None
        self.dimensions = dimensions
        self.batch_size = int(batch_size)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self._api_key = api_key
        self._http: Any = None

    @staticmethod
    def name() -> str:
        return "openai"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OpenAIEmbeddingFunction:
        """Rebuild from a stored config (chromadb's keys); the key is read from its variable later.

        Example:
            >>> OpenAIEmbeddingFunction.build_from_config({"model_name": "m", "api_key_env_var": "K"}).model_name
            'm'
        """
        return OpenAIEmbeddingFunction._from_config(config)

    def get_config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.CONFIG_KEYS}

    def validate_config_update(self, old_config: Mapping[str, Any], new_config: Mapping[str, Any]) -> None:
        """The model and the vector size fix the stored vectors' space; where they come from may change."""
        for key in ("model_name", "dimensions"):
            if key in new_config and new_config[key] != old_config.get(key):
                raise ConfigError(
                    f"'openai' {key} cannot change after creation: stored vectors were made with "
                    f"{old_config.get(key)!r} (create a new collection instead)"
                )

    # ----------------------------------------------------------------------------- requests
    def _key(self) -> str:
        key = self._api_key or os.getenv(self.api_key_env_var)
        if not key:
            raise ConfigError(
                f"OpenAIEmbeddingFunction needs an API key: the {self.api_key_env_var} environment variable is "
                f"not set (export {self.api_key_env_var}=..., or pass api_key_env_var='YOUR_VARIABLE')"
            )
        return key

    def _endpoint(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """(url, headers, query parameters) of the embeddings endpoint."""
        headers = {"Content-Type": "application/json", **(self.default_headers or {})}
        if self.api_type == "azure":
            url = f"{str(self.api_base).rstrip('/')}/openai/deployments/{self.deployment_id}/embeddings"
            headers["api-key"] = self._key()
            return url, headers, {"api-version": str(self.api_version)}
        headers["Authorization"] = f"Bearer {self._key()}"
        if self.organization_id:
            headers["OpenAI-Organization"] = self.organization_id
        return f"{(self.api_base or OPENAI_API_BASE).rstrip('/')}/embeddings", headers, {}

    def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        url, headers, params = self._endpoint()
        out: list[np.ndarray] = []
        for start in range(0, len(texts), max(self.batch_size, 1)):
            out.extend(self._request(url, headers, params, texts[start:start + max(self.batch_size, 1)]))
        return out

    def _payload(self, batch: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model_name, "input": batch, "encoding_format": "float"}
        # OpenAI's older models refuse "dimensions"; chromadb sends it to text-embedding-3 only.
        if self.dimensions is not None and (self.api_base is not None or "text-embedding-3" in self.model_name):
            payload["dimensions"] = self.dimensions
        return payload

    def _request(self, url: str, headers: dict, params: dict, batch: list[str]) -> list[np.ndarray]:
        import httpx

        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        payload = self._payload(batch)
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.post(url, json=payload, headers=headers, params=params)
            except httpx.TransportError as exc:
                if last:
                    raise ModelUnavailableError(
                        f"could not reach the embeddings endpoint {url} after {attempt + 1} attempts "
                        f"({type(exc).__name__}: {exc}); check api_base and the network"
                    ) from exc
                time.sleep(_backoff(attempt, None))
                continue
            if response.status_code in _RETRY_STATUSES and not last:
                time.sleep(_backoff(attempt, response.headers.get("retry-after")))
                continue
            return _vectors(response, url, len(batch), self.model_name, self.api_key_env_var)
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises

    def __getstate__(self) -> dict[str, Any]:  # an httpx client does not pickle (Ray, multiprocessing)
        return {**self.__dict__, "_http": None}


def _backoff(attempt: int, retry_after: str | None) -> float:
    try:
        asked = float(retry_after) if retry_after is not None else None
    except ValueError:
        asked = None
    return min(asked if asked is not None else 0.5 * 2**attempt, _MAX_WAIT)


def _vectors(response: Any, url: str, n: int, model: str, key_variable: str) -> list[np.ndarray]:
    """The answer's vectors in input order, or the error it stands for."""
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", {})
            message = detail.get("message") if isinstance(detail, Mapping) else str(detail)
        except ValueError:
            message = response.text[:300]
        if response.status_code in (401, 403):
            raise ConfigError(
                f"the embeddings endpoint {url} refused the API key from {key_variable} "
                f"(HTTP {response.status_code}: {message})"
            )
        cls = ModelUnavailableError if response.status_code in _RETRY_STATUSES else ConfigError
        raise cls(f"embedding with {model!r} at {url} failed: HTTP {response.status_code}: {message}")
    data = response.json().get("data")
    if not isinstance(data, list) or len(data) != n:
        raise EmbeddingCountError(
            f"{url} returned {len(data) if isinstance(data, list) else 'no'} embeddings for {n} inputs"
        )
    ordered = sorted(data, key=lambda item: item.get("index", 0))
    return [np.asarray(item["embedding"], dtype=np.float32) for item in ordered]
