"""Make root obey file permissions in a child process, for tests of unreadable files and folders.

Tests run as root in CI containers, and root reads any file; dropping CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH from the bounding set before exec takes that away from the child only.
"""
from __future__ import annotations

import ctypes

PR_CAPBSET_DROP = 24
DAC_CAPABILITIES = (1, 2)       # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
CAP_SETPCAP = 8


def drop_dac_capabilities() -> None:
    """A ``preexec_fn``: the exec'd child obeys file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in DAC_CAPABILITIES:
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def can_drop_capabilities() -> bool:
    """CAP_SETPCAP is needed to shrink the bounding set."""
    with open("/proc/self/status") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(effective & (1 << CAP_SETPCAP))
