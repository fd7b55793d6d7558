# -*- test-case-name: tests.test_manhole_sessions -*-
"""
The Python prompt a manhole session runs on its terminal (telnet or SSH).

C{twisted.conch.manhole} imports the global reactor, so it is imported only
when the first session starts, never when this module is.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.conch.manhole import ColoredManhole


@functools.cache
def manholeProtocol() -> type[ColoredManhole]:
    """
    The manhole's terminal protocol: Twisted's colored Python prompt with a
    banner.

    @return: A L{twisted.conch.manhole.ColoredManhole} subclass taking
        C{(namespace, banner)}.
    """
    from twisted.conch.manhole import ColoredManhole

    class BluegreenManhole(ColoredManhole):
        """
        A colored Python prompt that starts with a banner.
        """

        def __init__(self, namespace: dict[str, object], banner: str) -> None:
            """
            @param namespace: The session's names.
            @param banner: Shown above the first prompt.
            """
            super().__init__(namespace)
            self.banner = banner

        def initializeScreen(self) -> None:
            """
            Clear the screen, show the banner and the prompt.
            """
            self.terminal.reset()
            for line in self.banner.splitlines():
                self.terminal.write(line.encode("utf-8"))
                self.terminal.nextLine()
            self.terminal.write(self.ps[self.pn])
            self.setInsertMode()

    return BluegreenManhole
