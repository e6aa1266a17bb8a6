"""The langgraph.json auth hook: a `langgraph_sdk.Auth` object authenticates every request and its `on.*`
handlers authorise each resource action, optionally returning a metadata filter for row-level scoping.

With no auth configured the server is in local development mode: every request is the anonymous
developer, and the CLI binds to 127.0.0.1 by default.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langgraph_sdk import Auth
from langgraph_sdk.auth.types import AuthContext
from starlette.exceptions import HTTPException
from starlette.requests import Request

Filter = dict[str, Any]
PUBLIC_PATHS = frozenset({"/ok", "/ready", "/info", "/docs", "/openapi.json", "/.well-known/jwks.json", "/metrics"})
# The operator console's page and static assets carry no data; every API call they make is authenticated.
PUBLIC_PREFIXES = ("/console",)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or any(path == p or path.startswith(p + "/") for p in PUBLIC_PREFIXES)


@dataclass
class User:
    """The authenticated caller, shaped like langgraph_sdk's BaseUser so handlers can use either API."""

    identity: str
    display_name: str = ""
    is_authenticated: bool = True
    permissions: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.dict()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.dict().get(key, default)

    def dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "identity": self.identity,
            "display_name": self.display_name or self.identity,
            "is_authenticated": self.is_authenticated,
            "permissions": list(self.permissions),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> User:
        extra = {k: v for k, v in data.items() if k not in ("identity", "display_name", "is_authenticated", "permissions")}
        return cls(
            identity=str(data.get("identity")),
            display_name=str(data.get("display_name") or data.get("identity")),
            is_authenticated=bool(data.get("is_authenticated", True)),
            permissions=list(data.get("permissions") or []),
            extra=extra,
        )


ANONYMOUS = User(identity="anonymous", display_name="local developer", is_authenticated=False)


class Authorizer:
    def __init__(self, auth: Auth | None) -> None:
        self.auth = auth

    @property
    def enabled(self) -> bool:
        return self.auth is not None

    async def authenticate(self, request: Request) -> User:
        if self.auth is None or self.auth._authenticate_handler is None:
            return ANONYMOUS
        fn = self.auth._authenticate_handler
        names = inspect.signature(fn).parameters
        available: dict[str, Any] = {
            "request": request,
            "path": request.url.path,
            "method": request.method,
            "scopes": [],
            "path_params": dict(request.path_params),
            "query_params": dict(request.query_params),
            "headers": {k.encode(): v.encode() for k, v in request.headers.items()},
            "authorization": request.headers.get("authorization"),
        }
        kwargs = {name: available.get(name) for name in names if name in available}
        try:
            result = fn(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Auth.exceptions.HTTPException as exc:
            raise HTTPException(exc.status_code, exc.detail, headers=dict(exc.headers or {})) from None
        except AssertionError as exc:
            raise HTTPException(401, str(exc) or "Unauthorized") from None
        if result is None:
            raise HTTPException(401, "Unauthorized")
        if isinstance(result, str):
            return User(identity=result)
        if isinstance(result, Mapping):
            return User.from_dict(result)
        identity = getattr(result, "identity", None)
        if identity is None:
            raise HTTPException(500, "auth handler returned a user without an identity")
        return User(
            identity=str(identity),
            display_name=str(getattr(result, "display_name", identity)),
            permissions=list(getattr(result, "permissions", []) or []),
        )

    def _handler(self, resource: str, action: str) -> Any:
        assert self.auth is not None
        for key in ((resource, action), (resource, "*"), ("*", action), ("*", "*")):
            handlers = self.auth._handlers.get(key)
            if handlers:
                return handlers[-1]
        if self.auth._global_handlers:
            return self.auth._global_handlers[-1]
        return None

    async def authorize(self, user: User, resource: str, action: str, value: dict[str, Any]) -> Filter | None:
        """Run the most specific handler. Returns a metadata filter, or None when unrestricted."""
        if self.auth is None:
            return None
        handler = self._handler(resource, action)
        if handler is None:
            return None
        ctx = AuthContext(permissions=user.permissions, user=user, resource=resource, action=action)  # type: ignore[arg-type]
        try:
            result = await handler(ctx=ctx, value=value)
        except Auth.exceptions.HTTPException as exc:
            raise HTTPException(exc.status_code, exc.detail, headers=dict(exc.headers or {})) from None
        except AssertionError as exc:
            raise HTTPException(403, str(exc) or "Forbidden") from None
        if result is None or result is True:
            return None
        if result is False:
            raise HTTPException(403, "Forbidden")
        if not isinstance(result, dict):
            raise HTTPException(500, "auth handler returned an invalid result")
        return result


def matches(metadata: Mapping[str, Any] | None, filter_: Filter | None) -> bool:
    """Does a resource's metadata satisfy an auth filter ({k: v}, {k: {"$eq": v}}, {k: {"$contains": v}})?"""
    if not filter_:
        return True
    metadata = metadata or {}
    for key, cond in filter_.items():
        actual = metadata.get(key)
        if isinstance(cond, dict) and ("$eq" in cond or "$contains" in cond):
            if "$eq" in cond and actual != cond["$eq"]:
                return False
            if "$contains" in cond:
                needles = cond["$contains"] if isinstance(cond["$contains"], list) else [cond["$contains"]]
                if not isinstance(actual, list) or not all(n in actual for n in needles):
                    return False
        elif actual != cond:
            return False
    return True


def equality_part(filter_: Filter | None) -> dict[str, Any]:
    """The plain-equality part of a filter, which can be pushed into SQL."""
    out: dict[str, Any] = {}
    for key, cond in (filter_ or {}).items():
        if isinstance(cond, dict) and "$eq" in cond:
            out[key] = cond["$eq"]
        elif not (isinstance(cond, dict) and "$contains" in cond):
            out[key] = cond
    return out


def request_user(request: Request) -> User:
    return getattr(request.state, "user", ANONYMOUS)
