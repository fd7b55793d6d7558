# -*- test-case-name: tests.test_packaging -*-
"""
The C{twistd bluegreen} plugin.

This module is imported by every C{twistd} run, so it imports nothing but the
lazy L{ServiceMaker}: the real work lives in L{bluegreen.service.tap}, loaded only when
the plugin is used (which keeps C{twistd --reactor=...} working).
"""

from twisted.application.service import ServiceMaker

bluegreen = ServiceMaker(
    "bluegreen",
    "bluegreen.service.tap",
    "Blue-green deployment front end: switchable reverse proxy with health checks",
    "bluegreen",
)
