"""`interlock seed [--reset]`: the sample business systems' data and the sample help centre.

It spans two layers that must not import each other (the MCP servers' databases and the graphs' knowledge
base), so it lives here at the top, beside the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    seed = subparsers.add_parser("seed", help="create the sample business databases with two tenants of data")
    seed.add_argument("--reset", action="store_true", help="delete and recreate the sample databases")
    seed.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interlock.graphs.knowledge import ingest_sample
    from interlock.mcp_servers import sample_data

    print("seeding the sample business systems (orders, crm, billing, tickets)...", file=sys.stderr)
    counts = sample_data.seed(reset=args.reset)
    for system, n in counts.items():
        print(f"{system}: {n} rows inserted -> {sample_data.db_path(system)}")
    _register_sample_tenants(list(sample_data.TENANTS))
    # Who to act as: end users are bound to their own customer record, staff reach every customer.
    for user in sample_data.demo_users():
        who = f"--customer {user['customer_id']}" if user["customer_id"] else f"--sub {user['sub']} --staff"
        print(f"demo user {user['sub']} ({user['tenant']}): interlock token mint {who} "
              f"--tenant {user['tenant']} --scopes orders:read --aud orders", file=sys.stderr)
    # The sample company's help centre, so the RAG path has something to ground answers in.
    print("ingesting the sample help centre (embedding every chunk; a few seconds)...", file=sys.stderr)
    reports = asyncio.run(ingest_sample())
    for name, report in reports.items():
        print(f"knowledge {name}: {report}")
    return 0


def _register_sample_tenants(names: list[str]) -> None:
    """A local development server accepts only registered tenants (interlock/kernel/tenants.py)."""
    from interlock.kernel.database import LazyDatabase
    from interlock.kernel.tenants import TenantRegistry

    async def register_all() -> None:
        db = LazyDatabase()
        try:
            registry = TenantRegistry(db)
            for name in names:
                await registry.add(name, "sample tenant (interlock seed)")
        finally:
            await db.close()

    asyncio.run(register_all())
    print(f"tenants registered: {', '.join(names)}")
