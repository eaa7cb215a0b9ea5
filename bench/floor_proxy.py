"""The floor: the least a Python proxy on uvicorn can do — relay the request body to the
upstream and the upstream's bytes back, with no auth, routing, parsing, records or metrics.

    python bench/floor_proxy.py --port 9200 --upstream http://127.0.0.1:9100/v1/chat/completions

It uses the gateway's own upstream transport (runtime/adapters/transport.py), uvloop and
httptools, so the gap between it and the mock called directly is what uvicorn, one more
process hop and the event loop cost on this machine; the gap between it and the gateway is
what the gateway's own work costs. `bench/gateway_bench.py --floor` measures it alongside.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.adapters.transport import Timeout, Transport

TIMEOUT = Timeout(total=None, connect=5.0, read=60.0)


class Floor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.transport: Transport | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self.transport = Transport(trust_env=False)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if self.transport is not None:
                        await self.transport.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        assert self.transport is not None
        resp = await self.transport.post(
            self.upstream, {"content-type": "application/json"}, body, TIMEOUT
        )
        ctype = resp.headers.get("content-type") or "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(b"content-type", ctype.encode())],
            }
        )
        async for piece in resp.iter_any():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        resp.release()
        await send({"type": "http.response.body", "body": b""})


def main() -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="full URL of the upstream chat-completions endpoint"
    )
    args = parser.parse_args()
    uvicorn.run(
        Floor(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
