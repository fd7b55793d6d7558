# -*- test-case-name: tests.test_manhole_auth,tests.test_manhole_sessions -*-
"""
Helpers shared by the manhole tests: short temporary directories, files
with a mode, SSH client keys and cheap bcrypt hashes.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import bcrypt
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from twisted.conch.ssh.keys import Key
from twisted.trial.unittest import SynchronousTestCase


def shortDirectory(testCase: SynchronousTestCase) -> str:
    """
    A new directory with a short path (UNIX socket paths are limited to 108
    bytes), removed when the test ends.
    """
    path = tempfile.mkdtemp(prefix="bgm-", dir="/tmp")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def writeFile(directory: str, name: str, content: bytes, mode: int = 0o600) -> str:
    """
    Write a file with the given mode.

    @return: Its path.
    """
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, mode)
    return path


def clientKey(comment: str = "alice@laptop") -> tuple[Key, bytes, bytes]:
    """
    Make an SSH client key pair.

    @return: The private key, the private key file's content (OpenSSH
        format), and an C{authorized_keys} line with C{comment}.
    """
    private = ed25519.Ed25519PrivateKey.generate()
    data = private.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    public = private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    line = public + (b" " + comment.encode() if comment else b"") + b"\n"
    return Key(private), data, line


def hashed(password: bytes) -> bytes:
    """
    @return: A (cheap) bcrypt hash of C{password}.
    """
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))
