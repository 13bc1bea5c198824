"""Process liveness for the deploy scripts (`local.py` for the servers, `processes.py` for the services)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process `pid` is running: it exists and is not a zombie (a child that exited unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but not ours to signal (e.g. beam.smp runs as user rabbitmq)
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # it exited between the two looks
        return False
    except OSError:  # alive, but not ours to read
        return True
