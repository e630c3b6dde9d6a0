"""BM25 as a sparse embedding function: chromadb's ``ChromaBm25EmbeddingFunction`` (``chroma_bm25``).

Its registry name and persisted config keys are chromadb's (``chroma_bm25``; ``k``, ``b``,
``avg_doc_length``, ``token_max_length``, ``stopwords``, ``include_tokens``), so either library
reads the other's sparse config. Older retrieval databases stored the name ``bm25`` and the key
``k1``; both are still read. ``stemmer`` is our addition, written only when stemming is off.

Documents become sparse vectors of BM25 term-frequency weights; queries become the set of
their terms with weight 1.0. The index multiplies each query weight by the term's IDF
(computed from the indexed document frequencies), so ``query . document`` is the BM25 score::

    score(q, d) = sum over t in q of IDF(t) * tf(t, d) * (k + 1) /
                  (tf(t, d) + k * (1 - b + b * len(d) / avg_doc_length))

Tokenisation follows chromadb: punctuation becomes spaces, text is lowercased and split on
whitespace, English stopwords and tokens longer than ``token_max_length`` are dropped, and
the rest are Snowball-stemmed. Term ids are ``abs(murmur3_32(token, seed=0))``, as chromadb
computes them, so the ids agree with chromadb's for the same tokens. Product codes survive
as their parts: ``"ERR-4012"`` becomes the terms ``err`` and ``4012``.

A document's length is its token count after filtering; ``avg_doc_length`` is a fixed
constant (the function sees one document at a time, not the corpus).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from embedders.base import parse_config
from embedders.errors import ConfigError, UnsupportedInputError
from embedders.images import is_image
from embedders.sparse import SparseVector

__all__ = ["BM25EmbeddingFunction", "ENGLISH_STOPWORDS", "murmur3_32", "term_id"]

# NLTK's English list, as chromadb uses it.
ENGLISH_STOPWORDS = frozenset("""
a about above after again against ain all am an and any are aren aren't as at be because been before
being below between both but by can couldn couldn't d did didn didn't do does doesn doesn't doing don
don't down during each few for from further had hadn hadn't has hasn hasn't have haven haven't having
he her here hers herself him himself his how i if in into is isn isn't it it's its itself just ll m ma
me mightn mightn't more most mustn mustn't my myself needn needn't no nor not now o of off on once only
or other our ours ourselves out over own re s same shan shan't she she's should should've shouldn
shouldn't so some such t than that that'll the their theirs them themselves then there these they
this those through to too under until up ve very was wasn wasn't we were weren weren't what when where
which while who whom why will with won won't wouldn wouldn't y you you'd you'll you're you've your
yours yourself yourselves
""".split())

STEMMERS = ("snowball", None)
_PUNCTUATION = re.compile(r"[^\w\s]+", flags=re.UNICODE)


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, as a signed int (the value ``mmh3.hash`` returns).

    Example:
        >>> murmur3_32(b"foo"), murmur3_32(b"hello")
        (-156908512, 613153351)
    """
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    n = len(data)
    full = n - n % 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[full:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=65536)
def term_id(token: str) -> int:
    """The sparse index of a token: ``abs(murmur3_32(utf-8 bytes))`` (chromadb's hasher)."""
    return abs(murmur3_32(token.encode("utf-8")))


@lru_cache(maxsize=1)
def _snowball() -> Any:
    try:
        import snowballstemmer
    except ImportError as exc:
        raise ImportError(
            "BM25 stemming needs the snowballstemmer package: pip install snowballstemmer "
            "(or build BM25EmbeddingFunction(stemmer=None) to skip stemming)"
        ) from exc
    stemmer = snowballstemmer.stemmer("english")
    return lru_cache(maxsize=65536)(stemmer.stemWord)


class BM25EmbeddingFunction:
    """Sparse BM25 vectors for documents (``__call__``) and queries (``embed_query``).

    Args:
        k: Term-frequency saturation (>= 0); chromadb's name.
        b: Length normalisation, in [0, 1].
        avg_doc_length: Assumed average document length in tokens (> 0).
        token_max_length: Longer tokens are dropped (>= 1).
        stopwords: Words to drop; ``None`` uses :data:`ENGLISH_STOPWORDS`.
        include_tokens: chromadb's flag to label vectors with their tokens; kept in the config so
            chromadb's readers see it, but retrieval's sparse vectors carry no labels.
        stemmer: ``"snowball"`` (English Snowball stemmer) or ``None``.
        k1: The textbook name of ``k``; pass one or the other.

    Example:
        >>> ef = BM25EmbeddingFunction()
        >>> doc, = ef(["Error ERR-4012: pump overheating"])
        >>> query, = ef.embed_query(["err 4012"])
        >>> sorted(query.indices) == query.indices and set(query.indices) <= set(doc.indices)
        True
        >>> query.values
        [1.0, 1.0]
    """

    CONFIG_KEYS = ("k", "b", "avg_doc_length", "token_max_length", "stopwords", "include_tokens", "stemmer")
    CONFIG_ALIASES = {"k1": "k"}  # older retrieval databases stored k1

    def __init__(
        self,
        k: float = 1.2,
        b: float = 0.75,
        avg_doc_length: float = 256.0,
        token_max_length: int = 40,
        stopwords: Iterable[str] | None = None,
        include_tokens: bool = False,
        stemmer: str | None = "snowball",
        *,
        k1: float | None = None,
    ) -> None:
        if k1 is not None:
            if k != 1.2 and k != k1:
                raise ConfigError(f"k={k!r} and k1={k1!r} name the same setting; pass only one of them")
            k = k1
        self.k = _number(k, "k", lo=0.0)
        if not isinstance(include_tokens, bool):
            raise ConfigError(f"include_tokens must be True or False; got {include_tokens!r}")
        self.include_tokens = include_tokens
        self.b = _number(b, "b", lo=0.0, hi=1.0)
        self.avg_doc_length = _number(avg_doc_length, "avg_doc_length", lo=0.0, strict=True)
        if isinstance(token_max_length, bool) or not isinstance(token_max_length, int) or token_max_length < 1:
            raise ConfigError(f"token_max_length must be an integer >= 1; got {token_max_length!r}")
        self.token_max_length = token_max_length
        if stopwords is not None:
            if isinstance(stopwords, str) or not all(isinstance(w, str) for w in stopwords):
                raise ConfigError(f"stopwords must be a list of strings; got {stopwords!r}")
            stopwords = sorted({w.lower() for w in stopwords})
        self.stopwords: list[str] | None = stopwords  # type: ignore[assignment]
        self._stopwords = ENGLISH_STOPWORDS if stopwords is None else frozenset(stopwords)
        if stemmer not in STEMMERS:
            raise ConfigError(f"stemmer must be one of {list(STEMMERS)}; got {stemmer!r}")
        self.stemmer = stemmer
        self._stem = _snowball() if stemmer == "snowball" else None

    @property
    def k1(self) -> float:
        """The textbook name of :attr:`k`."""
        return self.k

    # ------------------------------------------------------------ protocol
    @staticmethod
    def name() -> str:
        return "chroma_bm25"

    @staticmethod
    def is_sparse() -> bool:
        return True

    def is_legacy(self) -> bool:
        return False

    def modalities(self) -> frozenset[str]:
        return frozenset({"text"})

    def default_space(self) -> str:
        return "ip"

    def supported_spaces(self) -> list[str]:
        return ["ip"]

    def get_config(self) -> dict[str, Any]:
        """chromadb's keys; ``stopwords`` only when not the default list, ``stemmer`` only when off."""
        config: dict[str, Any] = {
            "k": self.k,
            "b": self.b,
            "avg_doc_length": self.avg_doc_length,
            "token_max_length": self.token_max_length,
            "include_tokens": self.include_tokens,
        }
        if self.stopwords is not None:
            config["stopwords"] = list(self.stopwords)
        if self.stemmer != "snowball":
            config["stemmer"] = self.stemmer
        return config

    @staticmethod
    def build_from_config(config: Mapping[str, Any]) -> BM25EmbeddingFunction:
        """Rebuild from :meth:`get_config` output (unknown keys are refused)."""
        return BM25EmbeddingFunction(**parse_config(BM25EmbeddingFunction, config))

    @staticmethod
    def validate_config(config: Mapping[str, Any]) -> None:
        BM25EmbeddingFunction.build_from_config(config)

    def validate_config_update(self, old_config: Mapping[str, Any], new_config: Mapping[str, Any]) -> None:
        """Every key changes the stored vectors, so none may change after creation."""
        changed = sorted(k for k in new_config if new_config[k] != old_config.get(k))
        if changed:
            raise ConfigError(
                f"'chroma_bm25' config keys {changed} cannot change after creation: stored sparse vectors "
                "were made with the old values (create a new collection instead)"
            )

    # ------------------------------------------------------------ embedding
    def tokenize(self, text: str) -> list[str]:
        """The terms of ``text`` after cleaning, stopword removal and stemming."""
        out = []
        for token in _PUNCTUATION.sub(" ", text).lower().split():
            if token in self._stopwords or len(token) > self.token_max_length:
                continue
            if self._stem is not None:
                token = self._stem(token).strip()
            if token:
                out.append(token)
        return out

    def __call__(self, input: Any) -> list[SparseVector]:  # noqa: A002 - chromadb's name
        """Document vectors: BM25-saturated, length-normalised term frequencies."""
        vectors = []
        norm = self.k * (1 - self.b)
        per_token = self.k * self.b / self.avg_doc_length
        for text in _texts(input):
            counts = Counter(term_id(t) for t in self.tokenize(text))
            length = sum(counts.values())
            denominator_base = norm + per_token * length
            ids = sorted(counts)
            vectors.append(
                SparseVector(
                    indices=ids,
                    values=[counts[i] * (self.k + 1) / (counts[i] + denominator_base) for i in ids],
                )
            )
        return vectors

    def embed_query(self, input: Any) -> list[SparseVector]:  # noqa: A002
        """Query vectors: each distinct term once, weight 1.0 (the index applies IDF)."""
        vectors = []
        for text in _texts(input):
            ids = sorted({term_id(t) for t in self.tokenize(text)})
            vectors.append(SparseVector(indices=ids, values=[1.0] * len(ids)))
        return vectors

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"BM25EmbeddingFunction({args})"


def _texts(input: Any) -> list[str]:  # noqa: A002
    items = [input] if isinstance(input, str) else input
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Iterable):
        raise UnsupportedInputError(f"'chroma_bm25' embeds a list of strings; got {type(input).__name__}")
    items = list(items)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            kind = "an image" if is_image(item) else f"a {type(item).__name__}"
            raise UnsupportedInputError(f"'chroma_bm25' embeds text only; input at position {i} is {kind}")
    return items


def _number(value: Any, name: str, *, lo: float, hi: float = math.inf, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    if value < lo or value > hi or (strict and value == lo):
        bound = f"> {lo:g}" if strict else (f"in [{lo:g}, {hi:g}]" if hi != math.inf else f">= {lo:g}")
        raise ConfigError(f"{name} must be {bound}; got {value!r}")
    return float(value)
