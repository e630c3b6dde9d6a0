"""Who is asking and what they may touch: token and basic authentication, scoped authorization.

Configured in the server config's ``auth`` section (or the environment)::

    auth:
      tokens:
        - {name: admin,    token_env: RETRIEVAL_ADMIN_TOKEN, tenant: "*", databases: ["*"], actions: [read, write, admin]}
        - {name: reader-a, token: "...",  tenant: tenant-a, databases: [db-a], actions: [read]}
      users:   # HTTP basic auth (chromadb's BasicAuthClientProvider)
        - {username: alice, password_env: ALICE_PASSWORD, tenant: tenant-a, databases: ["*"], actions: [read, write]}

``token_env`` / ``password_env`` name an environment variable, so the file need hold no secret.
``RETRIEVAL_AUTH_TOKEN`` (or chromadb's ``CHROMA_SERVER_AUTHN_CREDENTIALS``) alone adds one
token with every right.

A token travels as ``Authorization: Bearer <token>`` or ``X-Chroma-Token: <token>`` (chromadb's
``TokenAuthClientProvider``); a user as ``Authorization: Basic ...``. Secrets are compared in
constant time (``hmac.compare_digest``).

Actions: ``read`` (get/list/count collections and databases, get/query/search records),
``write`` (create/modify/delete collections, add/update/upsert/delete records), ``admin``
(tenants, databases, reset). Which action each route needs lives in the route table
(``retrieval.http.wire.ROUTES``). A scope names one tenant (or ``"*"``) and its databases (or
``["*"]``).

Refusals never say whether a thing exists: a resource outside the credential's scope is refused
the same way whether it exists or not, and a collection addressed by id that lives in another
tenant answers exactly like a missing one (the handlers check the id's own tenant:
GHSA-2wm9-hf6c-p5cr).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from retrieval.errors import AuthenticationError, InvalidArgumentError, NotAllowedError

ACTIONS = ("read", "write", "admin")
#: Route actions that are not credential actions: ``public`` needs nothing, ``authenticated`` any
#: valid credential (pre-flight checks, identity, the API schema, metrics).
PUBLIC, AUTHENTICATED = "public", "authenticated"
WILDCARD = "*"
_ENTRY_KEYS = {"name", "token", "token_env", "username", "password", "password_env", "tenant", "databases", "actions"}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and its scope.

    Args:
        name: the credential's name (the token entry's ``name`` or the basic-auth username).
        tenant: the one tenant it may touch, or ``"*"``.
        databases: the databases it may touch in that tenant; ``("*",)`` for all.
        actions: a subset of ``read``, ``write``, ``admin``.

    Example:
        >>> p = Principal("reader-a", "tenant-a", ("db-a",), frozenset({"read"}))
        >>> p.allows("read", "tenant-a", "db-a"), p.allows("read", "tenant-b", "db-a"), p.allows("write", "tenant-a", "db-a")
        (True, False, False)
    """

    name: str
    tenant: str
    databases: tuple[str, ...]
    actions: frozenset[str]

    def allows(self, action: str, tenant: str | None = None, database: str | None = None) -> bool:
        """Whether this caller may do ``action`` on ``tenant`` / ``database``.

        ``tenant=None`` means the whole server (reset, creating a tenant it is not scoped to);
        ``database=None`` a tenant-level resource (the tenant itself, its list of databases).
        """
        if action == PUBLIC or action == AUTHENTICATED:
            return True
        if action not in self.actions:
            return False
        if self.tenant != WILDCARD and (tenant is None or tenant != self.tenant):
            return False
        if WILDCARD in self.databases:
            return True
        if tenant is None:  # server-wide needs every database of every tenant
            return False
        return database is None or database in self.databases

    def sees_database(self, database: str) -> bool:
        """Whether a database name may appear in a listing this caller asked for."""
        return WILDCARD in self.databases or database in self.databases

    def identity(self) -> dict[str, Any]:
        """``GET /api/v2/auth/identity``: chromadb's ``UserIdentity``; its client switches to the one
        tenant and database a credential is scoped to."""
        return {"user_id": self.name, "tenant": self.tenant, "databases": list(self.databases)}


@dataclass(frozen=True)
class _Secret:
    kind: str  # "token" or "basic"
    secret: bytes  # the token, or b"user:password"
    principal: Principal


class Authenticator:
    """Turns a request's headers into a :class:`Principal`, or refuses with a 401.

    Args:
        entries: the parsed credentials (see :meth:`from_config`).
    """

    def __init__(self, entries: Iterable[_Secret]):
        self._entries = tuple(entries)
        if not self._entries:
            raise InvalidArgumentError("auth is configured but holds no tokens or users")

    @classmethod
    def from_config(cls, section: Any, environ: Mapping[str, str] | None = None) -> Authenticator | None:
        """The authenticator a config's ``auth`` section (plus the environment) describes; None when
        neither names a credential (auth off).

        Example:
            >>> auth = Authenticator.from_config({"tokens": [{"name": "a", "token": "s3cret-token", "tenant": "t",
            ...     "databases": ["d"], "actions": ["read"]}]}, environ={})
            >>> auth.authenticate({"x-chroma-token": "s3cret-token"}).name
            'a'
        """
        environ = os.environ if environ is None else environ
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise InvalidArgumentError(f"server config 'auth' must be a mapping with 'tokens' and/or 'users'; got {section!r}")
        unknown = sorted(set(section) - {"tokens", "users"})
        if unknown:
            raise InvalidArgumentError(f"unknown auth key {unknown[0]!r}; auth takes 'tokens' and 'users'")
        entries = []
        for kind, key in (("token", "tokens"), ("basic", "users")):
            items = section.get(key) or []
            if not isinstance(items, list):
                raise InvalidArgumentError(f"auth.{key} must be a list of entries; got {items!r}")
            entries += [_entry(kind, item, f"auth.{key}[{i}]", environ) for i, item in enumerate(items)]
        shorthand = environ.get("RETRIEVAL_AUTH_TOKEN") or environ.get("CHROMA_SERVER_AUTHN_CREDENTIALS")
        if shorthand:
            everything = Principal("admin", WILDCARD, (WILDCARD,), frozenset(ACTIONS))
            entries += [_Secret("token", token.strip().encode(), everything) for token in shorthand.split(",") if token.strip()]
        return cls(entries) if entries else None

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller the headers prove, or :class:`AuthenticationError` (401).

        ``headers`` is a case-insensitive mapping (Starlette's) or a dict with lower-case keys.
        """
        kind, secret = _presented(headers)
        if secret is None:
            raise AuthenticationError(
                "authentication required: send 'Authorization: Bearer <token>', 'X-Chroma-Token: <token>' "
                "or HTTP basic auth"
            )
        found = None
        for entry in self._entries:  # every entry is compared: the time taken says nothing
            if entry.kind == kind and hmac.compare_digest(entry.secret, secret):
                found = entry.principal
        if found is None:
            raise AuthenticationError("invalid credentials")
        return found


def authorize(principal: Principal | None, action: str, tenant: str | None, database: str | None) -> None:
    """Refuse (403, :class:`NotAllowedError`) unless ``principal`` may do ``action`` there.

    ``principal`` None means auth is off: everything is allowed. The message names the action and
    the scope asked for, never whether the resource exists.
    """
    if principal is None or principal.allows(action, tenant, database):
        return
    where = "the server" if tenant is None else f"tenant {tenant!r}" + ("" if database is None else f" / database {database!r}")
    raise NotAllowedError(f"credential {principal.name!r} may not {action} {where}")


def _presented(headers: Mapping[str, str]) -> tuple[str, bytes | None]:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return "token", value.strip().encode()
        if scheme.lower() == "basic" and value.strip():
            try:
                return "basic", base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return "basic", b"\0invalid"
    token = headers.get("x-chroma-token")
    if token:
        return "token", token.strip().encode()
    return "", None


def _entry(kind: str, item: Any, where: str, environ: Mapping[str, str]) -> _Secret:
    if not isinstance(item, Mapping):
        raise InvalidArgumentError(f"{where} must be a mapping like {{name, token, tenant, databases, actions}}; got {item!r}")
    unknown = sorted(set(item) - _ENTRY_KEYS)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(_ENTRY_KEYS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys are {sorted(_ENTRY_KEYS)}"
        raise InvalidArgumentError(f"unknown key {unknown[0]!r} in {where}{hint}")
    if kind == "token":
        secret = _secret(item, "token", where, environ)
        name = str(item.get("name") or "token")
    else:
        username = item.get("username")
        if not isinstance(username, str) or not username or ":" in username:
            raise InvalidArgumentError(f"{where}.username must be a non-empty string without ':'; got {username!r}")
        secret = f"{username}:{_secret(item, 'password', where, environ)}"
        name = str(item.get("name") or username)
    tenant = item.get("tenant", WILDCARD)
    if not isinstance(tenant, str) or not tenant:
        raise InvalidArgumentError(f"{where}.tenant must be a tenant name or '*'; got {tenant!r}")
    databases = item.get("databases", [WILDCARD])
    if isinstance(databases, str):
        databases = [databases]
    if not isinstance(databases, list) or not databases or not all(isinstance(d, str) and d for d in databases):
        raise InvalidArgumentError(f"{where}.databases must be a non-empty list of names (or ['*']); got {databases!r}")
    actions = item.get("actions")
    if isinstance(actions, str):
        actions = [actions]
    if not isinstance(actions, list) or not actions or any(a not in ACTIONS for a in actions):
        raise InvalidArgumentError(f"{where}.actions must be a non-empty list drawn from {list(ACTIONS)}; got {actions!r}")
    return _Secret(kind, secret.encode(), Principal(name, tenant, tuple(databases), frozenset(actions)))


def _secret(item: Mapping[str, Any], key: str, where: str, environ: Mapping[str, str]) -> str:
    value, variable = item.get(key), item.get(f"{key}_env")
    if (value is None) == (variable is None):
        raise InvalidArgumentError(f"{where} needs exactly one of {key!r} or '{key}_env' (the environment variable holding it)")
    if variable is not None:
        value = environ.get(str(variable))
        if not value:
            raise InvalidArgumentError(f"{where}: environment variable {variable!r} ({key}_env) is not set or empty")
    if not isinstance(value, str) or len(value) < 8 or value != value.strip():
        raise InvalidArgumentError(f"{where}.{key} must be a string of at least 8 characters without surrounding spaces")
    return value
