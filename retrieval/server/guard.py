"""The server's one access check, applied by the app to every route before its handler runs.

``Guard`` authenticates a request from its headers alone (so a refused request is answered before
its body is read), then authorizes the action its route needs (``Route.action`` in the route table)
on the tenant and database named in the path, and, for the two calls that name them in the body
(``create_tenant``, ``create_database``), in the body. Collections addressed by id are checked
against the tenant they really belong to by the handlers (``ServerState.collection``), which answer
a foreign id exactly like a missing one.

Answers that list things are cut to the caller's scope (``list_databases``), and
``GET /auth/identity`` reports the caller's own scope, which chromadb's client uses to pick its
tenant and database.
"""

from __future__ import annotations

from typing import Any, Mapping

from retrieval.errors import InvalidArgumentError
from retrieval.http.wire import Route
from retrieval.server.auth import AUTHENTICATED, PUBLIC, Authenticator, Principal, authorize

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"


class Guard:
    """Authentication and authorization for one server; ``authenticator`` None means auth is off.

    Example:
        >>> Guard(None).principal({}, "read") is None  # auth off: no principal, everything allowed
        True
    """

    def __init__(self, authenticator: Authenticator | None):
        self.authenticator = authenticator

    @property
    def enabled(self) -> bool:
        return self.authenticator is not None

    def principal(self, headers: Mapping[str, str], action: str) -> Principal | None:
        """Who is asking (401 when auth is on and the headers prove no one); None for public routes
        and when auth is off."""
        if self.authenticator is None or action == PUBLIC:
            return None
        return self.authenticator.authenticate(headers)

    def check_path(self, principal: Principal | None, route: Route, path: Mapping[str, str]) -> None:
        """403 unless ``principal`` may do the route's action on the tenant/database in its path."""
        if principal is None or route.action in (PUBLIC, AUTHENTICATED):
            return
        if route.verb == "reset":
            authorize(principal, route.action, None, None)  # the whole server
        elif route.verb == "create_tenant":
            return  # the tenant is named in the body: check_body
        elif "tenant" in path:
            # get_tenant, list_databases and create_database are tenant-level; the rest name a database.
            authorize(principal, route.action, path["tenant"], path.get("database"))

    def check_body(self, principal: Principal | None, route: Route, path: Mapping[str, str], body: Any) -> None:
        """403 unless ``principal`` may act on what the body names (a new tenant or database)."""
        if principal is None or route.verb not in ("create_tenant", "create_database"):
            return
        name = body.get("name") if isinstance(body, Mapping) else None
        if not isinstance(name, str):
            raise InvalidArgumentError(f"'name' must be a string; got {name!r}")
        if route.verb == "create_tenant":
            authorize(principal, route.action, name, None)
        else:
            authorize(principal, route.action, path["tenant"], name)

    def answer(self, principal: Principal | None, route: Route, result: Any) -> Any:
        """The handler's answer cut to what ``principal`` may see."""
        if principal is None:
            return result
        if route.verb == "get_user_identity":
            return principal.identity()
        if route.verb == "list_databases":
            return [d for d in result if principal.sees_database(d.get("name", ""))]
        return result

    def check_ui(self, headers: Mapping[str, str], path: str, query: Mapping[str, str]) -> None:
        """The web page's API (``/ui/api/...``): reads, in the tenant/database of its query string."""
        principal = self.principal(headers, "read")
        if principal is None or path.rstrip("/").endswith("/info"):  # info: any valid credential
            return
        tenant = query.get("tenant") or DEFAULT_TENANT
        tenant_level = path.rstrip("/").endswith("/databases")
        database = None if tenant_level else (query.get("database") or DEFAULT_DATABASE)
        authorize(principal, "read", tenant, database)
