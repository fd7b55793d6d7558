# -*- test-case-name: tests.test_sync -*-
"""
The error every sync step raises when it fails or refuses.
"""


class SyncError(Exception):
    """
    A sync step failed or was refused; the message says why.
    """
