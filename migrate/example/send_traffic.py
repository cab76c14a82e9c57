"""Send the legacy app's recorded scenario (tests/legacy/golden_requests.jsonl) to a live URL.

The worked example's stand-in for production traffic: run it against
``rpckit migrate record`` to record samples (see migrate/README.md)::

    python migrate/example/send_traffic.py http://127.0.0.1:8080
"""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

SCENARIO = Path(__file__).resolve().parents[2] / "tests" / "legacy" / "golden_requests.jsonl"


def main(base_url: str) -> int:
    target = urlsplit(base_url)
    if target.scheme != "http" or target.hostname is None:
        print(f"send_traffic: {base_url!r} is not http://HOST:PORT", file=sys.stderr)
        return 2
    sent = 0
    with SCENARIO.open(encoding="utf-8") as lines:
        for line in lines:
            exchange = json.loads(line)
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            path = exchange["path"] + (f"?{exchange['query']}" if exchange["query"] else "")
            body = exchange["body"]
            headers = dict(exchange["headers"])
            headers.setdefault("User-Agent", "legacy-client/1.0")
            connection.request(
                exchange["method"],
                path,
                body=None if body is None else body.encode("utf-8"),
                headers=headers,
            )
            connection.getresponse().read()
            connection.close()
            sent += 1
    print(f"sent {sent} requests to {base_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"))
