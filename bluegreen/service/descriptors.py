# -*- test-case-name: tests.test_front_descriptors -*-
"""
The process's open-file limit, raised at start: the soft C{RLIMIT_NOFILE}
(often 1024) to the hard one, as nginx's C{worker_rlimit_nofile} and
HAProxy (which computes C{maxconn} from it) do, so the proxy is not the
first to run out of descriptors.
"""

from __future__ import annotations

from attrs import frozen

try:
    import resource
except ImportError:  # pragma: no cover (not POSIX)
    resource = None  # type: ignore[assignment]

#: What to raise to when the hard limit is unlimited: the kernel refuses
#: more than C{fs.nr_open} (1048576 by default on Linux).
_UNLIMITED_TARGET = 1024 * 1024


@frozen
class DescriptorLimit:
    """
    The soft open-file limit before and after raising it.

    @ivar before: The soft limit at start.
    @ivar after: The soft limit now.
    @ivar hard: The hard limit (C{-1} for unlimited).
    @ivar error: Why it could not be raised, or L{None}.
    """

    before: int
    after: int
    hard: int
    error: str | None = None


def raiseDescriptorLimit() -> DescriptorLimit | None:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit.

    @return: The limits, or L{None} on a platform without C{resource}.
    """
    if resource is None:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY:
        return DescriptorLimit(_UNLIMITED_TARGET, _UNLIMITED_TARGET, hard)
    if soft >= target:
        return DescriptorLimit(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        return DescriptorLimit(soft, soft, hard, str(e))
    return DescriptorLimit(soft, target, hard)
