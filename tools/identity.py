"""Interlock's development token issuer.

Graphs never forward a user's own token to an MCP server (no passthrough). Instead, for each call
Interlock mints a short-lived token bound to exactly one MCP server:

    iss = issuer()            ($INTERLOCK_ISSUER, default http://127.0.0.1:2024)
    aud = the server's canonical URL
    sub, tenant_id, scope (space separated), act = {"sub": "interlock"}, iat, nbf, exp, jti
    customer_id           only for an end user: the one customer they act for ($INTERLOCK_CUSTOMER_CLAIM)

Keys live under `<home>/keys` (RSA 2048, RS256). The private key file is created once, atomically,
with mode 0600, so several processes can call `mint()` concurrently without racing.

Contract used by other areas:
    mint(sub, tenant, scopes, audience, ttl_s=300, customer_id=None) -> str
    jwks() -> dict            # mounted by the graph server at /.well-known/jwks.json
    issuer() -> str
    public_key_pem() -> str   # what local MCP servers verify with when no JWKS URI is configured
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import RSAKey

from interlock.kernel.settings import DEFAULT_URL, get_settings

DEFAULT_ISSUER = DEFAULT_URL
ACTOR = "interlock"
ALGORITHM = "RS256"
MAX_TTL_S = 30 * 24 * 3600  # long enough for a desktop profile, short enough to force rotation


def issuer() -> str:
    return get_settings().issuer


def keys_dir() -> Path:
    path = get_settings().data_dir() / "keys"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _key_path() -> Path:
    return keys_dir() / "issuer.pem"


@lru_cache(maxsize=4)
def _load_key(path: str) -> RSAKey:
    return RSAKey.import_key(Path(path).read_bytes())


def signing_key() -> RSAKey:
    """The issuer's private key, generated on first use."""
    path = _key_path()
    if not path.exists():
        key = RSAKey.generate_key(2048)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".issuer-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key.as_pem(private=True))
            try:
                os.link(tmp, path)  # fails if another process won the race; we then use theirs
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    return _load_key(str(path))


def key_id() -> str:
    return signing_key().thumbprint()


def public_key_pem() -> str:
    return signing_key().as_pem(private=False).decode()


def jwks() -> dict:
    """The public JSON Web Key Set for `/.well-known/jwks.json`."""
    key = signing_key()
    public = key.as_dict(private=False)
    public.update({"kid": key.thumbprint(), "use": "sig", "alg": ALGORITHM})
    return {"keys": [public]}


def mint(
    sub: str,
    tenant: str,
    scopes: Iterable[str],
    audience: str,
    ttl_s: int = 300,
    extra_claims: dict | None = None,
    customer_id: str | None = None,
) -> str:
    """Mint a token for one MCP server (`audience` = its canonical URL); `customer_id` binds an end user."""
    scope_list = sorted({s.strip() for s in scopes if s and s.strip()})
    if not sub or not tenant or not audience:
        raise ValueError("sub, tenant and audience are required")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be between 1 and {MAX_TTL_S}")
    now = int(time.time())
    claims = {
        **(extra_claims or {}),
        "iss": issuer(),
        "sub": sub,
        "aud": audience,
        "tenant_id": tenant,
        "scope": " ".join(scope_list),
        "act": {"sub": ACTOR},
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if customer_id is not None:
        if not customer_id.strip():
            raise ValueError("customer_id must not be blank")
        claims[get_settings().customer_claim] = customer_id
    key = signing_key()
    return jwt.encode({"alg": ALGORITHM, "kid": key.thumbprint(), "typ": "JWT"}, claims, key)
