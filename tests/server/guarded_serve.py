"""Start `interlock serve` with an audit hook that records every outbound socket connection attempt, so a test
can assert that nothing left the machine (loopback and Unix sockets are allowed)."""

from __future__ import annotations

import os
import sys


def _guard(event: str, args: tuple) -> None:
    if event != "socket.connect":
        return
    address = args[1]
    if isinstance(address, tuple) and address and address[0] not in ("127.0.0.1", "::1", "localhost"):
        with open(os.environ["INTERLOCK_SOCKET_LOG"], "a") as log:
            log.write(f"{address!r}\n")


sys.addaudithook(_guard)

from interlock.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
