"""The sample business systems' own databases (one SQLite file each under `<home>/systems/`) and their seed data.

Two tenants, `acme` and `globex`, with customers, orders and shipments, invoices and credits, and support
tickets. Seeding is deterministic and idempotent (`INSERT OR IGNORE`); `reset=True` recreates the files.
Ids are unique across tenants so a tenant isolation bug would show up as a cross-tenant read, not a miss.

Fixed rows the tests and demos rely on (N = 1 for acme, 2 for globex):
    ORD-N001 processing (cancellable), ORD-N002 shipped, ORD-N003 delivered, ORD-N004 pending (unpaid)
    CUS-N01 is the customer of ORD-N001..N004; INV-N001 belongs to ORD-N001; TCK-N001 is open

Orders, invoices, tickets and the customer records are customer-owned (`customer_id`; a customer record owns
itself): an end user bound to CUS-N01 sees ORD-N001..N004, INV-N001..N004, TCK-N001 and their own record only.
`demo_users()` names the sample end users and staff.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from interlock.tools.endpoints import SYSTEMS, check_system

from interlock.kernel.settings import home
from interlock.kernel.sqlite_busy import switch_to_wal

TENANTS: dict[str, int] = {"acme": 1, "globex": 2}

SCHEMAS: dict[str, tuple[str, ...]] = {
    "orders": (
        """CREATE TABLE IF NOT EXISTS orders (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, customer_id TEXT NOT NULL, status TEXT NOT NULL,
            currency TEXT NOT NULL, total_cents INTEGER NOT NULL, paid_cents INTEGER NOT NULL,
            refunded_cents INTEGER NOT NULL DEFAULT 0, items TEXT NOT NULL, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS shipments (
            order_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, carrier TEXT NOT NULL, tracking_number TEXT NOT NULL,
            status TEXT NOT NULL, eta TEXT, events TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS refunds (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,
            reason TEXT NOT NULL, created_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS orders_tenant ON orders (tenant, customer_id)",
    ),
    "crm": (
        """CREATE TABLE IF NOT EXISTS customers (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
            phone TEXT NOT NULL, company TEXT NOT NULL, tier TEXT NOT NULL, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS customers_tenant ON customers (tenant, email)",
    ),
    "billing": (
        """CREATE TABLE IF NOT EXISTS invoices (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, customer_id TEXT NOT NULL, order_id TEXT,
            amount_cents INTEGER NOT NULL, paid_cents INTEGER NOT NULL, credited_cents INTEGER NOT NULL DEFAULT 0,
            currency TEXT NOT NULL, status TEXT NOT NULL, issued_at TEXT NOT NULL, due_date TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS credits (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, invoice_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,
            reason TEXT NOT NULL, created_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS invoices_tenant ON invoices (tenant, customer_id)",
    ),
    "tickets": (
        """CREATE TABLE IF NOT EXISTS tickets (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, customer_id TEXT, subject TEXT NOT NULL, body TEXT NOT NULL,
            status TEXT NOT NULL, priority TEXT NOT NULL, escalated INTEGER NOT NULL DEFAULT 0,
            escalation_reason TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS comments (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, ticket_id TEXT NOT NULL, author TEXT NOT NULL,
            body TEXT NOT NULL, created_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS tickets_tenant ON tickets (tenant, status)",
    ),
}

_FIRST = ["Ava", "Liam", "Noah", "Mia", "Zoe", "Omar", "Lena", "Ivan", "Sara", "Kenji", "Priya", "Tom"]
_LAST = ["Nguyen", "Schmidt", "Okafor", "Rossi", "Tanaka", "Silva", "Kowalski", "Haddad", "Murphy", "Lindqvist"]
_COMPANY = {"acme": "Acme Corp", "globex": "Globex Inc"}
_PRODUCTS = [("SKU-100", "USB-C dock", 8999), ("SKU-200", "27in monitor", 27900), ("SKU-300", "Keyboard", 6450),
             ("SKU-400", "Headset", 12900), ("SKU-500", "Laptop stand", 3999), ("SKU-600", "Webcam", 7900)]
_CARRIERS = ["DHL", "UPS", "FedEx", "PostNL"]
_SUBJECTS = ["Package arrived damaged", "Wrong item delivered", "Invoice amount looks wrong",
             "Where is my order?", "Request to change delivery address", "Refund not received yet"]


def systems_dir() -> Path:
    path = home() / "systems"
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(system: str) -> Path:
    return systems_dir() / f"{check_system(system)}.db"


_ready: set[Path] = set()


def connect(system: str) -> sqlite3.Connection:
    """A connection to one system's database (schema ensured, possibly empty). Callers close it."""
    path = db_path(system)
    if path not in _ready:
        ensure_schema(system)
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


_local = threading.local()
_generation = 0  # bumped by seed(reset=True): inode numbers of deleted files are often reused


def _file_identity(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (_generation, -1, -1)
    return (_generation, st.st_ino, st.st_ctime_ns)


@contextmanager
def session(system: str) -> Iterator[sqlite3.Connection]:
    """A reused per-thread connection (opening one costs ~0.9 ms, a query ~0.02 ms).

    Tool code runs on the event loop thread and never awaits inside a transaction, so sharing is safe; a
    transaction left open by an error is rolled back. Recreated when the file is replaced (seed --reset).
    """
    path = db_path(system)
    cache: dict[Path, tuple[tuple[int, int, int], sqlite3.Connection]] = _local.__dict__.setdefault("conns", {})
    cached = cache.get(path)
    identity = _file_identity(path)
    if cached is None or cached[0] != identity or identity[1] == -1:
        if cached is not None:
            cached[1].close()
        conn = connect(system)
        cache[path] = (_file_identity(path), conn)
    else:
        conn = cached[1]
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def ensure_schema(system: str) -> None:
    path = db_path(system)
    with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout=10000")
        switch_to_wal(conn)
        for stmt in SCHEMAS[system]:
            conn.execute(stmt)
    _ready.add(path)


def _iso(dt: datetime) -> str:
    return dt.replace(microsecond=0).isoformat()


def seed(reset: bool = False) -> dict[str, int]:
    """Create and fill every system's database; returns rows inserted per system."""
    global _generation
    if reset:
        _generation += 1
        for system in SYSTEMS:
            _ready.discard(db_path(system))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_path(system)}{suffix}").unlink(missing_ok=True)
    for system in SYSTEMS:
        ensure_schema(system)
    counts = dict.fromkeys(SYSTEMS, 0)
    base = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for tenant, n in TENANTS.items():
        rng = random.Random(f"interlock-{tenant}")
        customers = []
        for i in range(1, 11):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            cid = f"CUS-{n}{i:02d}"
            domain = tenant + ".example"
            customers.append(cid)
            row = (cid, tenant, f"{first} {last}", f"{first}.{last}{i}@{domain}".lower(),
                   f"+1-555-{n}{i:02d}-{rng.randint(1000, 9999)}", _COMPANY[tenant],
                   rng.choice(["standard", "gold", "platinum"]), _iso(base - timedelta(days=300 - i)),
                   _iso(base - timedelta(days=300 - i)))
            counts["crm"] += _insert("crm", "customers", row)
        fixed = {1: "processing", 2: "shipped", 3: "delivered", 4: "pending"}
        for i in range(1, 21):
            oid = f"ORD-{n}{i:03d}"
            status = fixed.get(i) or rng.choice(["processing", "shipped", "delivered", "delivered", "cancelled"])
            cust = customers[0] if i in fixed else rng.choice(customers)
            items, total = [], 0
            for sku, name, price in rng.sample(_PRODUCTS, rng.randint(1, 3)):
                qty = rng.randint(1, 2)
                items.append({"sku": sku, "name": name, "qty": qty, "unit_cents": price})
                total += qty * price
            paid = 0 if status == "pending" else total
            created = base + timedelta(days=i, hours=rng.randint(0, 8))
            counts["orders"] += _insert("orders", "orders", (
                oid, tenant, cust, status, "USD", total, paid, 0, json.dumps(items), _iso(created), _iso(created)))
            if status in ("shipped", "delivered"):
                shipped = created + timedelta(days=1)
                events = [{"at": _iso(shipped), "status": "picked_up", "location": "Warehouse"}]
                if status == "delivered":
                    events.append({"at": _iso(shipped + timedelta(days=2)), "status": "delivered",
                                   "location": "Customer address"})
                else:
                    events.append({"at": _iso(shipped + timedelta(days=1)), "status": "in_transit",
                                   "location": "Regional hub"})
                counts["orders"] += _insert("orders", "shipments", (
                    oid, tenant, rng.choice(_CARRIERS), f"TRK{n}{rng.randint(10**8, 10**9 - 1)}",
                    "delivered" if status == "delivered" else "in_transit",
                    _iso(shipped + timedelta(days=3)), json.dumps(events)))
            inv_status = "open" if paid == 0 else "paid"
            counts["billing"] += _insert("billing", "invoices", (
                f"INV-{n}{i:03d}", tenant, cust, oid, total, paid, 0, "USD", inv_status, _iso(created),
                _iso(created + timedelta(days=30))))
        for i in range(1, 7):
            tid = f"TCK-{n}{i:03d}"
            status = "open" if i <= 3 else rng.choice(["pending", "solved"])
            created = base + timedelta(days=10 + i)
            counts["tickets"] += _insert("tickets", "tickets", (
                tid, tenant, customers[i - 1], _SUBJECTS[i - 1], f"Customer reports: {_SUBJECTS[i - 1].lower()}.",
                status, rng.choice(["low", "normal", "high"]), 0, None, _iso(created), _iso(created)))
    return counts


def demo_users() -> list[dict[str, str | None]]:
    """Whom to act as in the sample tenants: each tenant's first two customers as end users (subject = the
    customer id, bound to their own record; no contact details, so printing them leaks nothing) and one staff
    member (no customer; give it `customers:any`)."""
    users: list[dict[str, str | None]] = []
    with session("crm") as conn:
        for tenant, n in TENANTS.items():
            rows = conn.execute("SELECT id FROM customers WHERE tenant = ? AND id IN (?, ?) ORDER BY id",
                                (tenant, f"CUS-{n}01", f"CUS-{n}02")).fetchall()
            users += [{"sub": r["id"], "tenant": tenant, "customer_id": r["id"]} for r in rows]
            users.append({"sub": f"ops@{tenant}.example", "tenant": tenant, "customer_id": None})
    return users


def _insert(system: str, table: str, row: tuple) -> int:
    with closing(connect(system)) as conn:
        cur = conn.execute(f"INSERT OR IGNORE INTO {table} VALUES ({', '.join('?' for _ in row)})", row)
        return cur.rowcount
