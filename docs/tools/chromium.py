"""Debian's Chromium for the screenshot tools and the dashboard tests: where it is, how to start it.

The flags keep a headless Chromium off this machine's closed network (without them it tries
Google's hosts at every start, many connections at a time) and out of the sandbox it cannot
create as root.
"""

from __future__ import annotations

import shutil

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium on PATH: apt-get install --no-install-recommends chromium (or make screenshot)")
