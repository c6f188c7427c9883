"""Seeds drawn from names: the same on every process and machine (Python's ``hash`` is salted)."""

from __future__ import annotations

import hashlib


def seed_of(*parts: object, nbytes: int = 8) -> int:
    """An ``nbytes``-byte seed from the sha256 of ``parts`` joined by "/"."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:nbytes], "little")
