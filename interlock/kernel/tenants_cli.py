"""`interlock tenants list|add|remove`: the tenants a local development server accepts (kernel/tenants.py).

They write the configured database directly (`INTERLOCK_HOME` or `INTERLOCK_DATABASE_URL`), like `interlock seed`,
so a running server sees a new tenant on its next request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from interlock.kernel.database import LazyDatabase
from interlock.kernel.settings import database_url, is_postgres, mask_url, sqlite_path
from interlock.kernel.tenants import TenantRegistry, check_name

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tenants", help="list or register the tenants local development mode accepts")
    sub = p.add_subparsers(dest="tenants_command", required=True)
    sub.add_parser("list", help="print the registered tenants, one a line").set_defaults(func=_list)
    add = sub.add_parser("add", help="register tenants (idempotent)")
    add.add_argument("names", nargs="+", metavar="NAME")
    add.add_argument("--note", help="what the tenant is for")
    add.set_defaults(func=_add)
    remove = sub.add_parser("remove", help="unregister tenants (their data stays where it is)")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(func=_remove)


def _with_registry(work: Callable[[TenantRegistry], Awaitable[T]]) -> T:
    async def main() -> T:
        db = LazyDatabase(database_url())
        try:
            return await work(TenantRegistry(db))
        finally:
            await db.close()

    return asyncio.run(main())


def _list(args: argparse.Namespace) -> int:
    names = _with_registry(lambda registry: registry.names())
    for name in names:
        print(name)
    if not names:
        url = database_url()
        where = mask_url(url) if is_postgres(url) else sqlite_path(url)
        print(f"no tenants registered in {where}; `interlock seed` registers the sample "
              "tenants, `interlock tenants add NAME` another", file=sys.stderr)
    return 0


def _add(args: argparse.Namespace) -> int:
    try:
        names = [check_name(name) for name in args.names]
    except ValueError as exc:
        print(f"interlock tenants: {exc}", file=sys.stderr)
        return 2

    async def work(registry: TenantRegistry) -> list[bool]:
        return [await registry.add(name, args.note) for name in names]

    for name, added in zip(names, _with_registry(work), strict=True):
        print(f"{name}: {'registered' if added else 'already registered'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    async def work(registry: TenantRegistry) -> list[bool]:
        return [await registry.remove(name) for name in args.names]

    missing = 0
    for name, removed in zip(args.names, _with_registry(work), strict=True):
        print(f"{name}: {'removed' if removed else 'was not registered'}")
        missing += not removed
    return 1 if missing else 0
