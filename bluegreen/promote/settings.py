# -*- test-case-name: tests.test_promote -*-
"""
The promotion settings: what C{--preview}, C{--verify}, C{--verify-command},
C{--verify-timeout} and C{--auto-promote} mean, checked once by
L{bluegreen.service.promoteoptions}.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class PathCheck:
    """
    One C{--verify PATH[=STATUSES]}: a C{GET} of C{path} on the standby must
    answer one of C{statuses}.

    @ivar path: The path (and query), starting with C{/}.
    @ivar statuses: The statuses that pass; empty means any C{2xx} or
        C{3xx}.
    """

    path: str
    statuses: frozenset[int] = frozenset()

    def passes(self, status: int) -> bool:
        """
        @param status: A response's status.
        @return: Whether it passes the check.
        """
        if self.statuses:
            return status in self.statuses
        return 200 <= status < 400

    def expected(self) -> str:
        """
        @return: The statuses that pass, in words (C{"200"}, C{"200 or 204"},
            C{"2xx or 3xx"}).
        """
        if not self.statuses:
            return "2xx or 3xx"
        return " or ".join(str(code) for code in sorted(self.statuses))

    def describe(self) -> str:
        """
        @return: E.g. C{"GET /fact/1"}.
        """
        return f"GET {self.path}"


@frozen
class PromotionSettings:
    """
    The checked promotion options.

    @ivar preview: Where the preview listener listens (an endpoint
        description), or L{None} without C{--preview}.
    @ivar previewListen: C{--preview} as given, for messages.
    @ivar checks: The C{--verify} checks, in order.
    @ivar command: The C{--verify-command}, or L{None}.
    @ivar timeout: Seconds each check (and the command) may take.
    @ivar autoPromote: With C{--auto-promote}: seconds after a revision is
        reported on the standby before it is promoted (if its checks
        pass); L{None}: never by itself.
    """

    preview: str | None = None
    previewListen: str = ""
    checks: tuple[PathCheck, ...] = ()
    command: str | None = None
    timeout: float = 10.0
    autoPromote: float | None = None

    @property
    def verifies(self) -> bool:
        """
        Whether there is any check to run before a planned switch.
        """
        return bool(self.checks) or self.command is not None
