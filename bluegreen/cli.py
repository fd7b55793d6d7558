# -*- test-case-name: tests.test_cli -*-
"""
The C{bluegreen} console command.

For now it answers C{--version}; later subcommands talk to a running
service's admin API.
"""

from __future__ import annotations

import sys

from twisted.python import usage

from . import __version__


class Options(usage.Options):
    """
    C{bluegreen [--version]}.
    """

    synopsis = "bluegreen [--version]"

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"bluegreen {__version__}")
        raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """
    Run the command.

    @param argv: Arguments (without the program name); C{sys.argv[1:]} if
        L{None}.
    @return: The exit code: 0 ok, 2 usage error.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"bluegreen: {e}", file=sys.stderr)
        print(f"usage: {options.synopsis}", file=sys.stderr)
        return 2
    print(str(options), end="")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
