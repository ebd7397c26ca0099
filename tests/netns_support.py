"""What the tests that build network namespaces need from the machine (imported by those tests)."""

import os

from srv6pm.exporter.nft import Nft, NftUnavailable


def skip_reason(what: str = "network namespaces, SRv6 routes and nftables tables") -> str | None:
    """Why namespace tests cannot run here (not root, no libnftables), or None."""
    if os.geteuid() != 0:
        return f"needs root: creates {what}"
    try:
        Nft(None).close()
    except NftUnavailable as exc:
        return str(exc)
    return None

