"""Text normalisation and the stable hash used for de-duplication and split assignment."""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np


def clean_text(value: str) -> str:
    """NFC unicode normalisation and trimmed whitespace at both ends."""
    return unicodedata.normalize("NFC", value).strip()


def dedup_key(value: str) -> str:
    """Questions that differ only in case or spacing are the same question."""
    return " ".join(value.casefold().split())


def stable_hash64(value: str) -> int:
    """64-bit hash that is the same in every process and Python version (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")


def hash_to_unit_interval(hashes: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats in [0, 1) using their top 53 bits."""
    return (hashes.astype(np.uint64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
