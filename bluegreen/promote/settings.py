# -*- test-case-name: tests.test_promote -*-
"""
The promotion settings: what C{--preview}, C{--verify}, C{--verify-command},
C{--verify-timeout}, C{--auto-promote} and the analysis options mean, checked once by
L{bluegreen.service.promoteoptions}.
"""

from __future__ import annotations

from attrs import field, frozen


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
class AnalysisSettings:
    """
    How the first moments after a planned switch are judged.

    @ivar window: Seconds watched after each planned switch (0: never).
    @ivar minRequests: Responses needed before anything is judged.
    @ivar maxErrorRate: The highest 5xx share tolerated, in per cent.
    @ivar maxP95: The highest p95 latency tolerated, in seconds, or L{None}.
    """

    window: float = 60.0
    minRequests: int = 20
    maxErrorRate: float = 5.0
    maxP95: float | None = None


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
    @ivar analysis: The post-promotion analysis (C{--analysis-window}...).
    """

    preview: str | None = None
    previewListen: str = ""
    checks: tuple[PathCheck, ...] = ()
    command: str | None = None
    timeout: float = 10.0
    autoPromote: float | None = None
    analysis: AnalysisSettings = field(factory=AnalysisSettings)

    @property
    def verifies(self) -> bool:
        """
        Whether there is any check to run before a planned switch.
        """
        return bool(self.checks) or self.command is not None
