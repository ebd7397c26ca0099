"""Moved to :mod:`srv6pm.nft`, the shared libnftables binding; this name stays importable (the README has named it)."""

from srv6pm.nft import Nft, NftError, NftUnavailable

__all__ = ["Nft", "NftError", "NftUnavailable"]
