"""Container health check: exit 0 when edgerun answers 200 on /v2/health/ready, 1 otherwise (stdlib only)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def ready_url(env: dict[str, str]) -> str:
    port = env.get("EDGERUN_PORT", "8000")
    return env.get("EDGERUN_HEALTH_URL") or f"http://127.0.0.1:{port}/v2/health/ready"


def main() -> int:
    env = dict(os.environ)
    request = urllib.request.Request(ready_url(env))
    api_key = env.get("EDGERUN_API_KEY")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (loopback)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
