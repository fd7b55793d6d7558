# -*- test-case-name: tests -*-
"""
bluegreen: a Twisted front end for blue-green deployments.

It proxies every request to the live environment (GREEN or BLUE), switches the
live target atomically and exposes the pieces to the rest of the service.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
