"""Container health check: exit 0 when every URL given answers 2xx within the timeout.

    python deploy/docker/healthcheck.py http://127.0.0.1:8080/api/v2/monitor/health [URL ...]

Standard library only (the image has no curl); the reason of a failure goes to stderr, which
``docker inspect`` shows under ``State.Health``.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(url: str, timeout: float) -> str | None:
    """``None`` when ``url`` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http only, given by us)
            if 200 <= response.status < 300:
                return None
            return f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: healthcheck.py URL [URL ...]", file=sys.stderr)
        return 2
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "5"))
    failures = [reason for url in argv if (reason := check(url, timeout))]
    for reason in failures:
        print(reason, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
