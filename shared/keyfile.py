"""Development keys kept in a file of `.local/` (mode 600), as `make up` keeps them for the services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def kept_key(path: Path, new: Callable[[], str], *, renew: bool = False) -> str:
    """The key kept in `path`; a new one (`new()`) written there if there is none, or if `renew`."""
    if not renew and path.exists() and (kept := path.read_text().strip()):
        return kept
    key = new()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # before the secret goes in
    path.write_text(key + "\n")
    return key
