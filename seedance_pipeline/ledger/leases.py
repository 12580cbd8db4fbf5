"""Who holds a claim, and whether they still can: leases that work across hosts.

A claim carries its owner's identity and a lease expiry that a thread of the owning process
renews while the process lives. Another host judges a claim by its lease alone; a process on
the same kernel and in the same pid namespace can also see at once that the owner is gone.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from functools import cache
from pathlib import Path

from ..settings import SettingError

LEASE_ENV = "SEEDANCE_CLAIM_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    """How long a claim outlives its owner's last renewal (`SEEDANCE_CLAIM_LEASE_SECONDS`)."""
    value = os.environ.get(LEASE_ENV, "").strip()
    if not value:
        return DEFAULT_LEASE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise SettingError(f"{LEASE_ENV}={value!r} is not a number of seconds") from None
    if not 1 <= seconds <= 3600:
        raise SettingError(f"{LEASE_ENV}={value!r} must be between 1 and 3600 seconds")
    return seconds


@cache
def _kernel() -> str:
    """This kernel's boot and pid namespace: two processes share it only on one machine."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return uuid.uuid4().hex  # no /proc: only leases can tell
    return f"{boot}.{pid_ns}"


def owner_id() -> str:
    """This process: `host/kernel/pid/random` (the random part survives pid reuse)."""
    return f"{socket.gethostname()}/{_kernel()}/{os.getpid()}/{_process_token()}"


@cache
def _process_token_for(pid: int) -> str:
    return uuid.uuid4().hex[:8]


def _process_token() -> str:
    return _process_token_for(os.getpid())  # a forked child gets its own


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs in this pid namespace."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_gone(owner: str | None, lease_expires_at: float | None, now: float) -> bool:
    """True when the claim's lease ran out, or its owner process is visibly dead here."""
    if lease_expires_at is None or lease_expires_at < now:
        return True
    _host, kernel, pid, _token = (owner or "///").split("/")[-4:]
    return kernel == _kernel() and pid.isdigit() and not pid_alive(int(pid))


class LeaseKeeper:
    """Renews this process's leases in the background until the process ends."""

    def __init__(self, renew, seconds: float):
        self._renew, self.seconds = renew, seconds
        self._started = False
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._loop, name="ledger-leases", daemon=True).start()

    def _loop(self) -> None:
        beat = threading.Event()  # never set: a wait that tests patching time.sleep leave alone
        while True:
            beat.wait(self.seconds / 3)
            try:
                self._renew(time.time() + self.seconds)
            except Exception:  # the database is away for a moment: try at the next beat
                continue
