# -*- test-case-name: tests.test_manhole -*-
"""
Tests for L{bluegreen.manhole}: the password and key files, the SSH host key,
the namespace, and real telnet and SSH sessions against the running proxy.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Callable
from typing import Any, cast

import bcrypt
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.conch.telnet import (
    DO,
    DONT,
    ECHO,
    IAC,
    LINEMODE,
    NAWS,
    SGA,
    ITelnetProtocol,
    OptionRefused,
    TelnetProtocol,
    TelnetTransport,
)
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from bluegreen.controller import SwitchRefused
from bluegreen.manhole.auth import (
    AuthorizedKeysChecker,
    ManholeError,
    PasswordFileChecker,
    checkPassword,
    defaultHostKeyPath,
    fingerprint,
    loadHostKey,
    readAuthorizedKeys,
    readPasswords,
)
from bluegreen.manhole.namespace import Text
from bluegreen.manhole.service import Manhole
from bluegreen.manhole.ssh import SSHShell
from bluegreen.manhole.telnet import TelnetLogin
from bluegreen.service.tap import Options, ProxyService, StartupError, makeService
from tests._backends import (
    captureLogs,
    echo,
    fetch,
    reactor,
    startBackend,
    startProxy,
)
from tests._util import PATIENCE, freePort, waitFor

#: The required options (no admin API).
REQUIRED = [
    "--green",
    "http://127.0.0.1:5002",
    "--blue",
    "http://127.0.0.1:5001",
    "--admin",
    "none",
    "--access-log",
    "none",
]

#: Every name the namespace has from the start.
NAMES = [
    "controller",
    "proxy",
    "health",
    "pools",
    "service",
    "reactor",
    "pprint",
    "switch",
    "status",
    "help",
]


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


def parse(*args: str) -> Options:
    """
    Parse the required options plus C{args}.
    """
    options = Options()
    options.parseOptions([*REQUIRED, *args])
    return options


class PasswordFileTests(SynchronousTestCase):
    """
    L{readPasswords} reads C{--manhole-passwd} files and L{checkPassword}
    checks passwords against them.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)

    def assertBad(self, content: bytes, message: str, mode: int = 0o600) -> None:
        """
        Assert that a file holding C{content} is refused with C{message}
        (after the option name and the path).
        """
        path = writeFile(self.directory, "passwd", content, mode)
        error = self.assertRaises(ManholeError, readPasswords, path)
        self.assertEqual(str(error), f"--manhole-passwd: {path!r}{message}")

    def test_read(self) -> None:
        """
        Lines are C{user:password}; the password is everything after the
        first colon (plaintext or a bcrypt hash); blank lines and comments
        are skipped.
        """
        hash = hashed(b"pw")
        path = writeFile(
            self.directory,
            "passwd",
            b"# operators\n\nalice:s3cret\r\nbob:" + hash + b"\ncarol:a:b c\n",
        )
        self.assertEqual(
            readPasswords(path),
            {b"alice": b"s3cret", b"bob": hash, b"carol": b"a:b c"},
        )

    def test_groupReadable(self) -> None:
        """
        A file its group may read (but not write) is accepted.
        """
        path = writeFile(self.directory, "passwd", b"alice:pw\n", 0o640)
        self.assertEqual(readPasswords(path), {b"alice": b"pw"})

    def test_worldReadable(self) -> None:
        """
        A file other users may read is refused, with the fix.
        """
        self.assertBad(
            b"alice:pw\n",
            " has mode 0644, so other users could read or change the manhole "
            "passwords: chmod 600 it",
            0o644,
        )

    def test_groupWritable(self) -> None:
        """
        A file its group may write is refused.
        """
        self.assertBad(
            b"alice:pw\n",
            " has mode 0660, so other users could read or change the manhole "
            "passwords: chmod 600 it",
            0o660,
        )

    def test_missing(self) -> None:
        """
        A missing file is refused with the system's reason.
        """
        path = os.path.join(self.directory, "nope")
        error = self.assertRaises(ManholeError, readPasswords, path)
        self.assertEqual(
            str(error),
            f"--manhole-passwd: cannot read {path!r}: No such file or directory",
        )

    def test_directory(self) -> None:
        """
        A directory is refused.
        """
        error = self.assertRaises(ManholeError, readPasswords, self.directory)
        self.assertEqual(
            str(error), f"--manhole-passwd: {self.directory!r} is not a file"
        )

    def test_unreadable(self) -> None:
        """
        A file that cannot be read is refused.
        """
        if os.getuid() == 0:
            raise SkipTest("root can read any file")
        path = writeFile(self.directory, "passwd", b"alice:pw\n", 0o000)
        error = self.assertRaises(ManholeError, readPasswords, path)
        self.assertEqual(
            str(error), f"--manhole-passwd: cannot read {path!r}: Permission denied"
        )

    def test_badLines(self) -> None:
        """
        Each malformed line is refused with its number.
        """
        self.assertBad(b"alice:pw\nbob\n", " line 2: expected user:password")
        self.assertBad(b":pw\n", " line 1: expected user:password")
        self.assertBad(b"al ice:pw\n", " line 1: expected user:password")
        self.assertBad(b"alice:\n", " line 1: empty password for 'alice'")
        self.assertBad(b"alice:a\nalice:b\n", " line 2: 'alice' appears twice")
        self.assertBad(
            b"alice:$6$salt$hash\n",
            " line 1: unsupported password hash for 'alice'; give a bcrypt hash "
            "($2b$...) or the plaintext password",
        )

    def test_empty(self) -> None:
        """
        A file without a user is refused.
        """
        self.assertBad(b"# nobody\n\n", " has no user:password line")

    def test_checkPassword(self) -> None:
        """
        Plaintext and bcrypt entries are both checked.
        """
        hash = hashed(b"s3cret")
        self.assertEqual(
            [
                checkPassword(b"s3cret", b"s3cret"),
                checkPassword(b"s3cre", b"s3cret"),
                checkPassword(b"s3cret", hash),
                checkPassword(b"wrong", hash),
                checkPassword(hash, hash),
            ],
            [True, False, True, False, False],
        )


class AuthorizedKeysTests(SynchronousTestCase):
    """
    L{readAuthorizedKeys} reads C{--manhole-keys} files.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)

    def test_read(self) -> None:
        """
        Each line is a public key with an optional comment.
        """
        key1, _, line1 = clientKey("alice@laptop")
        key2, _, line2 = clientKey("")
        path = writeFile(self.directory, "keys", b"# ops\n" + line1 + line2, 0o644)
        self.assertEqual(
            readAuthorizedKeys(path),
            [(key1.public(), "alice@laptop"), (key2.public(), "")],
        )

    def test_badLine(self) -> None:
        """
        A line that is not a public key (or has OpenSSH options) is refused.
        """
        _, _, line = clientKey()
        for content in [b"garbage\n", b'from="10.0.0.1" ' + line]:
            path = writeFile(self.directory, "keys", line + content, 0o644)
            error = self.assertRaises(ManholeError, readAuthorizedKeys, path)
            self.assertEqual(
                str(error),
                f"--manhole-keys: {path!r} line 2: not a public key (expected "
                "TYPE BASE64 [COMMENT], as in ~/.ssh/id_ed25519.pub; options are "
                "not supported)",
            )

    def test_privateKey(self) -> None:
        """
        A private key is not a public key.
        """
        _, private, _ = clientKey()
        path = writeFile(self.directory, "keys", private)
        self.assertRaises(ManholeError, readAuthorizedKeys, path)

    def test_empty(self) -> None:
        """
        A file without a key is refused.
        """
        path = writeFile(self.directory, "keys", b"\n# none\n")
        error = self.assertRaises(ManholeError, readAuthorizedKeys, path)
        self.assertEqual(str(error), f"--manhole-keys: {path!r} has no public key")

    def test_writable(self) -> None:
        """
        A file other users may write is refused.
        """
        _, _, line = clientKey()
        path = writeFile(self.directory, "keys", line, 0o664)
        error = self.assertRaises(ManholeError, readAuthorizedKeys, path)
        self.assertEqual(
            str(error),
            f"--manhole-keys: {path!r} has mode 0664, so other users could add "
            "keys: chmod 644 (or 600) it",
        )


class HostKeyTests(SynchronousTestCase):
    """
    L{loadHostKey} creates the SSH host key safely, and reuses it.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)

    def test_created(self) -> None:
        """
        A missing key is created as a 0600 file, even with a permissive
        umask, in a new 0700 directory; no temporary file is left.
        """
        path = os.path.join(self.directory, "state", "host_key")
        old = os.umask(0)
        try:
            key, created = loadHostKey(path)
        finally:
            os.umask(old)
        self.assertTrue(created)
        self.assertEqual(key.type(), "Ed25519")
        self.assertFalse(key.isPublic())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertTrue(stat.S_ISREG(os.stat(path).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["host_key"])
        self.assertEqual(Key.fromFile(path), key)

    def test_reused(self) -> None:
        """
        An existing key is loaded, not replaced.
        """
        path = os.path.join(self.directory, "host_key")
        first, _ = loadHostKey(path)
        second, created = loadHostKey(path)
        self.assertEqual((second, created), (first, False))

    def test_existingDirectoryKept(self) -> None:
        """
        An existing directory's mode is left alone.
        """
        os.chmod(self.directory, 0o755)
        loadHostKey(os.path.join(self.directory, "host_key"))
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o755)

    def test_readableByOthers(self) -> None:
        """
        A key that others may read is refused, as OpenSSH does.
        """
        path = os.path.join(self.directory, "host_key")
        loadHostKey(path)
        os.chmod(path, 0o640)
        error = self.assertRaises(ManholeError, loadHostKey, path)
        self.assertEqual(
            str(error),
            f"--manhole-host-key: {path!r} has mode 0640, so other users could "
            "read the SSH host key: chmod 600 it",
        )

    def test_notAKey(self) -> None:
        """
        A file that is not a private key is refused.
        """
        path = writeFile(self.directory, "host_key", b"hello\n")
        error = self.assertRaises(ManholeError, loadHostKey, path)
        self.assertTrue(
            str(error).startswith(
                f"--manhole-host-key: {path!r} is not an unencrypted SSH private key"
            ),
            str(error),
        )
        _, _, public = clientKey()
        path = writeFile(self.directory, "host_key", public)
        error = self.assertRaises(ManholeError, loadHostKey, path)
        self.assertEqual(
            str(error),
            f"--manhole-host-key: {path!r} holds a public key; the private key "
            "is needed",
        )

    def test_cannotCreate(self) -> None:
        """
        A key that cannot be created is reported with the reason.
        """
        blocker = writeFile(self.directory, "file", b"")
        path = os.path.join(blocker, "host_key")
        error = self.assertRaises(ManholeError, loadHostKey, path)
        self.assertEqual(
            str(error),
            f"--manhole-host-key: cannot create the directory {blocker!r}: File exists",
        )

    def test_ownKey(self) -> None:
        """
        An operator's own key (here RSA from ssh-keygen's PEM format) is
        used as it is.
        """
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data = private.private_bytes(
            Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()
        )
        path = writeFile(self.directory, "host_key", data)
        key, created = loadHostKey(path)
        self.assertEqual((key.type(), created), ("RSA", False))

    def test_default(self) -> None:
        """
        The default lives in C{$XDG_STATE_HOME/bluegreen}, or in
        C{~/.local/state/bluegreen} when it is unset or relative.
        """
        self.patch(os, "environ", {"XDG_STATE_HOME": "/srv/state", "HOME": "/h"})
        self.assertEqual(defaultHostKeyPath(), "/srv/state/bluegreen/manhole_host_key")
        self.patch(os, "environ", {"XDG_STATE_HOME": "state", "HOME": "/h"})
        self.assertEqual(
            defaultHostKeyPath(), "/h/.local/state/bluegreen/manhole_host_key"
        )

    def test_fingerprint(self) -> None:
        """
        Fingerprints look like OpenSSH's: C{SHA256:} and unpadded base64.
        """
        key, _, _ = clientKey()
        self.assertRegex(fingerprint(key), r"^SHA256:[A-Za-z0-9+/]{43}$")


class CheckerTests(SynchronousTestCase):
    """
    The credential checkers re-read their files at every login.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)

    def test_password(self) -> None:
        """
        The right password gives the user name; a wrong one, an unknown user
        or an unusable file is refused (and logged).
        """
        path = writeFile(self.directory, "passwd", b"alice:s3cret\n")
        checker = PasswordFileChecker(path, None)
        login = checker.requestAvatarId
        self.assertEqual(
            self.successResultOf(login(UsernamePassword(b"alice", b"s3cret"))),
            b"alice",
        )
        with capturedLogs() as events:
            for credentials in [
                UsernamePassword(b"alice", b"wrong"),
                UsernamePassword(b"mallory", b"s3cret"),
            ]:
                self.failureResultOf(login(credentials), UnauthorizedLogin)
            os.chmod(path, 0o644)
            self.failureResultOf(
                login(UsernamePassword(b"alice", b"s3cret")), UnauthorizedLogin
            )
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "manhole: login refused: wrong password for alice",
                "manhole: login refused: unknown user mallory",
                f"manhole: login as alice refused: --manhole-passwd: {path!r} has "
                "mode 0644, so other users could read or change the manhole "
                "passwords: chmod 600 it",
            ],
        )

    def test_reread(self) -> None:
        """
        A password changed in the file counts from the next login.
        """
        path = writeFile(self.directory, "passwd", b"alice:old\n")
        checker = PasswordFileChecker(path, None)
        writeFile(self.directory, "passwd", b"alice:" + hashed(b"new") + b"\n")
        self.successResultOf(
            checker.requestAvatarId(UsernamePassword(b"alice", b"new"))
        )
        self.failureResultOf(
            checker.requestAvatarId(UsernamePassword(b"alice", b"old")),
            UnauthorizedLogin,
        )

    def sshCredentials(
        self, key: Key, username: bytes = b"deploy", signed: bool = True
    ) -> SSHPrivateKey:
        """
        Credentials as conch's server builds them.
        """
        blob = key.public().blob()
        sigData = b"session data"
        signature = key.sign(sigData) if signed else None
        return SSHPrivateKey(username, b"ssh-ed25519", blob, sigData, signature)

    def test_key(self) -> None:
        """
        A listed key signed for gives the user and the key's comment (or
        fingerprint); offered without a signature it is accepted for
        signing; a key not listed, or a bad signature, is refused.
        """
        alice, _, aliceLine = clientKey("alice@laptop")
        bob, _, bobLine = clientKey("")
        mallory, _, _ = clientKey("mallory")
        path = writeFile(self.directory, "keys", aliceLine + bobLine, 0o644)
        login = AuthorizedKeysChecker(path).requestAvatarId
        self.assertEqual(
            self.successResultOf(login(self.sshCredentials(alice))),
            b"deploy (key alice@laptop)",
        )
        self.assertEqual(
            self.successResultOf(login(self.sshCredentials(bob, b"bob"))),
            f"bob (key {fingerprint(bob)})".encode(),
        )
        self.failureResultOf(
            login(self.sshCredentials(alice, signed=False)), ValidPublicKey
        )
        self.failureResultOf(login(self.sshCredentials(mallory)), UnauthorizedLogin)
        forged = self.sshCredentials(alice)
        forged.signature = mallory.sign(forged.sigData)
        self.failureResultOf(login(forged), UnauthorizedLogin)

    def test_keyRefusalsLogged(self) -> None:
        """
        A key not listed, a bad signature, a key blob that is not a key and
        an unusable file are refused, each logged as such; a file made
        usable again counts from the next login.
        """
        alice, _, line = clientKey("alice@laptop")
        mallory, _, _ = clientKey("mallory")
        path = writeFile(self.directory, "keys", line, 0o644)
        login = AuthorizedKeysChecker(path).requestAvatarId
        forged = self.sshCredentials(alice)
        forged.signature = mallory.sign(forged.sigData)
        garbage = self.sshCredentials(alice)
        garbage.blob = b"\x00\x00\x00\x03abc"
        with capturedLogs() as events:
            self.failureResultOf(login(self.sshCredentials(mallory)), UnauthorizedLogin)
            self.failureResultOf(login(forged), UnauthorizedLogin)
            self.failureResultOf(login(garbage), UnauthorizedLogin)
            os.chmod(path, 0o666)
            self.failureResultOf(login(self.sshCredentials(alice)), UnauthorizedLogin)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                f"manhole: SSH key {fingerprint(mallory)} of deploy is not in {path}",
                "manhole: bad SSH key signature from deploy",
                f"manhole: login as deploy refused: --manhole-keys: {path!r} has "
                "mode 0666, so other users could add keys: chmod 644 (or 600) it",
            ],
        )
        os.chmod(path, 0o600)
        self.successResultOf(login(self.sshCredentials(alice)))

    def test_keyUserNameSanitized(self) -> None:
        """
        A user name with control characters is made safe for the logs and
        the switch history.
        """
        alice, _, line = clientKey("alice@laptop")
        path = writeFile(self.directory, "keys", line, 0o644)
        login = AuthorizedKeysChecker(path).requestAvatarId
        self.assertEqual(
            self.successResultOf(login(self.sshCredentials(alice, b"x\nFAKE\x1b[2J"))),
            b"x?FAKE?[2J (key alice@laptop)",
        )


class ManholeServiceTests(SynchronousTestCase):
    """
    L{makeService} adds the manholes when asked, and their namespace holds
    the live objects.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.passwd = writeFile(self.directory, "passwd", b"alice:s3cret\n")
        self.socket = os.path.join(self.directory, "m.sock")

    def make(self, *args: str) -> tuple[ProxyService, MemoryReactorClock]:
        """
        Build the service on a memory reactor.
        """
        memory = MemoryReactorClock()
        service = makeService(parse(*args), memory)
        assert isinstance(service, ProxyService)
        return service, memory

    def telnet(self) -> tuple[ProxyService, Manhole]:
        """
        Build the service with a telnet manhole on a UNIX socket.
        """
        service, _ = self.make(
            "--manhole", f"unix:{self.socket}", "--manhole-passwd", self.passwd
        )
        assert service.manhole is not None
        return service, service.manhole

    def test_off(self) -> None:
        """
        By default there is no manhole.
        """
        service, _ = self.make()
        self.assertIsNone(service.manhole)
        self.assertFalse(any(isinstance(child, Manhole) for child in service))

    def test_listeners(self) -> None:
        """
        Each manhole listens where its option says, beside the proxy.
        """
        port = freePort()
        service, memory = self.make(
            "--port",
            "tcp:4567:interface=127.0.0.1",
            "--manhole",
            f"unix:{self.socket}",
            "--manhole-ssh",
            f"tcp:{port}:interface=127.0.0.1",
            "--manhole-passwd",
            self.passwd,
            "--manhole-host-key",
            os.path.join(self.directory, "host_key"),
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(p[0], p[3]) for p in memory.tcpServers],
            [(4567, "127.0.0.1"), (port, "127.0.0.1")],
        )
        self.assertEqual([u[0] for u in memory.unixServers], [self.socket])
        self.assertIsInstance(service.manhole, Manhole)

    def test_hostKeyCreated(self) -> None:
        """
        Building the SSH manhole creates its host key, mode 0600.
        """
        path = os.path.join(self.directory, "keys", "host_key")
        service, _ = self.make(
            "--manhole-ssh",
            "tcp:6022:interface=127.0.0.1",
            "--manhole-passwd",
            self.passwd,
            "--manhole-host-key",
            path,
        )
        assert service.manhole is not None
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(service.manhole.hostKey, Key.fromFile(path))
        self.assertTrue(service.manhole.createdKey)

    def test_hostKeyUnusable(self) -> None:
        """
        A host key readable by others stops start-up with a clear message.
        """
        path = writeFile(self.directory, "host_key", b"x", 0o644)
        error = self.assertRaises(
            StartupError,
            self.make,
            "--manhole-ssh",
            "tcp:6022:interface=127.0.0.1",
            "--manhole-passwd",
            self.passwd,
            "--manhole-host-key",
            path,
        )
        self.assertEqual(
            error.code,
            f"bluegreen: --manhole-host-key: {path!r} has mode 0644, so other "
            "users could read the SSH host key: chmod 600 it",
        )

    def test_namespace(self) -> None:
        """
        A session's namespace holds the live objects under plain names.
        """
        service, manhole = self.telnet()
        namespace = manhole.namespaceFor("alice")
        self.assertEqual(list(namespace), NAMES)
        self.assertIs(namespace["controller"], service.controller)
        self.assertIs(namespace["proxy"], service.resource)
        self.assertIs(namespace["health"], service.health)
        self.assertIs(namespace["pools"], service.pools)
        self.assertIs(namespace["service"], service)
        self.assertIsNot(manhole.namespaceFor("bob"), namespace)

    def test_switch(self) -> None:
        """
        C{switch(to)} switches and records who did it from the manhole.
        """
        service, manhole = self.telnet()
        with capturedLogs() as events:
            record = manhole.namespaceFor("alice")["switch"]("blue")
        self.assertEqual(service.controller.active, "blue")
        self.assertEqual(record.reason, "manual switch via manhole by alice")
        self.assertEqual(service.controller.history[-1], record)
        self.assertIn(
            "manhole: alice switches to blue", [formatEvent(e) for e in events]
        )
        record = manhole.namespaceFor("bob")["switch"]("green", force=True)
        self.assertEqual(record.reason, "manual switch via manhole by bob, forced")

    def test_switchRefused(self) -> None:
        """
        A refused switch raises L{SwitchRefused} (shown at the prompt) and
        is logged.
        """
        service, manhole = self.telnet()
        with capturedLogs() as events:
            error = self.assertRaises(
                SwitchRefused, manhole.namespaceFor("alice")["switch"], "green"
            )
        self.assertEqual(str(error), "green is already live")
        self.assertIn(
            "manhole: switch to green by alice refused: green is already live",
            [formatEvent(e) for e in events],
        )
        self.assertEqual(service.controller.history, [])

    def test_help(self) -> None:
        """
        C{help()} lists every name, and shows as plain text at the prompt.
        """
        _, manhole = self.telnet()
        text = manhole.namespaceFor("alice")["help"]()
        self.assertIsInstance(text, Text)
        self.assertEqual(repr(text), str(text))
        self.assertIn("logged in as alice", text)
        listed = re.findall(r"^  (\w+)", text, re.MULTILINE)
        self.assertEqual(sorted(listed), sorted(NAMES))

    def test_add(self) -> None:
        """
        L{Manhole.add} puts more objects in new sessions, listed by help().
        """
        _, manhole = self.telnet()
        flags = object()
        manhole.add("flags", flags, "the Redis feature flags")
        namespace = manhole.namespaceFor("alice")
        self.assertIs(namespace["flags"], flags)
        self.assertIn("  flags ", namespace["help"]())
        self.assertIn("the Redis feature flags", namespace["help"]())
        self.assertRaises(ValueError, manhole.add, "not a name", 1, "")

    def test_status(self) -> None:
        """
        C{status()} says what is live and each environment's health.
        """
        _, manhole = self.telnet()
        status = manhole.namespaceFor("alice")["status"]
        self.assertEqual(
            status(),
            "live: green (start); mode: serving\n"
            "  green  unknown  http://127.0.0.1:5002  not checked yet  <- live\n"
            "  blue   unknown  http://127.0.0.1:5001  not checked yet\n"
            "no switch yet",
        )
        manhole.namespace.switch("alice", "blue")
        lines = status().splitlines()
        self.assertTrue(lines[-1].startswith("last switch: "), lines)
        self.assertIn(
            "green -> blue (manual switch via manhole by alice); 1 in all", lines[-1]
        )


# Real sessions

_ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()#][0-9A-Za-z]|\x1b[=>c78DM]")


def screenText(data: bytes) -> str:
    """
    Terminal output without its escape sequences.
    """
    return _ESCAPE.sub(b"", data.replace(b"\x1bE", b"\n")).decode("utf-8", "replace")


async def waitForText(read: Callable[[], str], text: str, count: int = 1) -> None:
    """
    Wait until C{read()} shows C{text} at least C{count} times.

    @raise AssertionError: If it has not within L{PATIENCE} seconds, with
        what was shown.
    """
    try:
        await waitFor(lambda: read().count(text) >= count, f"{text!r} x {count}")
    except AssertionError as e:
        raise AssertionError(f"{e}; shown: {read()!r}") from None


#: A session test waits for several things in turn, each within PATIENCE.
SESSION_TIMEOUT = 4 * PATIENCE


class TelnetClient(TelnetProtocol):
    """
    A telnet client that negotiates like a real one: it lets the server
    echo (ECHO) and suppress go-ahead (SGA), and agrees to send its window
    size (NAWS) and to use LINEMODE.

    @ivar output: Everything received (telnet commands removed).
    @ivar lost: Fires when the connection is lost.
    """

    def __init__(self) -> None:
        self.output = b""
        self.lost: Deferred[None] = Deferred()
        self.connected = False

    def connectionMade(self) -> None:
        """
        Connected.
        """
        self.connected = True

    def enableRemote(self, option: bytes) -> bool:
        """
        Let the server echo and suppress go-ahead.
        """
        return option in (ECHO, SGA)

    def enableLocal(self, option: bytes) -> bool:
        """
        Agree to NAWS (sending an 80x24 size next), SGA and LINEMODE.
        """
        if option == NAWS:
            reactor.callLater(0, self.sendSize)
        return option in (NAWS, SGA, LINEMODE)

    def sendSize(self) -> None:
        """
        Send the window size.
        """
        transport: Any = self.transport
        if self.connected:
            transport.requestNegotiation(NAWS, struct.pack("!HH", 80, 24))

    def dataReceived(self, data: bytes) -> None:
        """
        Keep what the server sent.
        """
        self.output += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{lost}.
        """
        self.connected = False
        self.lost.callback(None)

    def text(self) -> str:
        """
        @return: The output so far, as a terminal would show it.
        """
        return screenText(self.output)

    def send(self, data: bytes) -> None:
        """
        Type C{data} (C{\\n} is sent as CR LF).
        """
        assert self.transport is not None
        self.transport.write(data)


class TelnetSessionTests(TestCase):
    """
    A real telnet session with the manhole of a running proxy.
    """

    timeout = SESSION_TIMEOUT

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.logs = captureLogs(self)
        self.passwd = writeFile(
            self.directory, "passwd", b"alice:" + hashed(b"s3cret") + b"\n"
        )
        self.socket = os.path.join(self.directory, "m.sock")
        _, green = startBackend(self, "green", echo("green"))
        _, blue = startBackend(self, "blue", echo("blue"))
        self.proxy = startProxy(
            self,
            green,
            blue,
            "--manhole",
            f"unix:{self.socket}:mode=600",
            "--manhole-passwd",
            self.passwd,
        )

    async def connect(self, kind: type[TelnetClient] = TelnetClient) -> TelnetClient:
        """
        Open a telnet connection to the manhole, closed when the test ends.

        @param kind: The client protocol.
        """
        endpoint = UNIXClientEndpoint(reactor, self.socket)
        transport = await connectProtocol(endpoint, TelnetTransport(kind))
        client = transport.protocol
        assert isinstance(client, TelnetClient)

        async def close() -> None:
            if client.connected:
                transport.transport.abortConnection()
                await client.lost

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        return client

    async def login(
        self, client: TelnetClient, password: bytes, attempt: int = 1
    ) -> None:
        """
        Answer the user name and password prompts.

        @param attempt: Which login attempt on the connection this is.
        """
        await waitForText(client.text, "Username: ", attempt)
        client.send(b"alice\n")
        await waitForText(client.text, "Password: ", attempt)
        client.send(password + b"\n")

    async def test_session(self) -> None:
        """
        An operator logs in, reads the live environment, switches it, and
        logs out with Ctrl-D; traffic follows the switch and the history
        names the manhole and the user.
        """
        self.assertEqual(stat.S_IMODE(os.stat(self.socket).st_mode), 0o600)
        client = await self.connect()
        await self.login(client, b"s3cret")
        await waitForText(client.text, "logged in as alice")
        await waitForText(client.text, ">>> ")
        self.assertNotIn("s3cret", client.text())
        client.send(b"controller.active\n")
        await waitForText(client.text, "'green'")
        client.send(b'switch("blue")\n')
        await waitForText(client.text, "reason='manual switch via manhole by alice'")
        controller = self.proxy.controller
        self.assertEqual(controller.active, "blue")
        self.assertEqual(
            controller.history[-1].reason, "manual switch via manhole by alice"
        )
        response = await fetch(self, self.proxy.port, b"GET", b"/")
        self.assertEqual(response.values(b"x-env"), [b"blue"])
        client.send(b"status()\n")
        await waitForText(
            client.text, "live: blue (manual switch via manhole by alice)"
        )
        client.send(b"help()\n")
        await waitForText(client.text, "switch(to, force=False)")
        client.send(b'switch("blue")\n')
        await waitForText(client.text, "SwitchRefused: blue is already live")
        client.send(b"\x04")
        await client.lost
        messages = [formatEvent(e) for e in self.logs.namespace("bluegreen.manhole")]
        self.assertEqual(
            [m for m in messages if "logged" in m],
            ["manhole: alice logged in (telnet)", "manhole: alice logged out (telnet)"],
        )
        self.assertEqual(self.logs.errors(), [])

    async def test_wrongPassword(self) -> None:
        """
        A wrong password is refused (after a delay) and the prompt comes
        back; the right one then logs in.
        """
        client = await self.connect()
        await self.login(client, b"guess")
        await waitForText(client.text, "Authentication failed")
        await waitForText(client.text, "Username: ", count=2)
        self.assertNotIn(">>> ", client.text())
        await self.login(client, b"s3cret", attempt=2)
        await waitForText(client.text, ">>> ")
        self.assertEqual(self.proxy.controller.active, "green")

    async def test_typeAhead(self) -> None:
        """
        A user name and password typed at once (before the client has
        stopped echoing) still log in.
        """
        client = await self.connect()
        await waitForText(client.text, "Username: ")
        client.send(b"alice\ns3cret\n")
        await waitForText(client.text, ">>> ")

    async def test_tooManyFailures(self) -> None:
        """
        The third wrong password closes the connection.
        """
        self.patch(TelnetLogin, "failureDelay", 0.01)
        client = await self.connect()
        for attempt in range(1, 4):
            await waitForText(client.text, "Username: ", count=attempt)
            client.send(b"alice\n")
            await waitForText(client.text, "Password: ", count=attempt)
            client.send(b"nope\n")
        await client.lost
        self.assertIn("Authentication failed; disconnecting", client.text())

    async def test_clientKeepsEcho(self) -> None:
        """
        A client that will not let the server echo (so it shows the
        password as typed) can still log in.
        """

        class EchoingClient(TelnetClient):
            def enableRemote(self, option: bytes) -> bool:
                return option == SGA

        client = await self.connect(EchoingClient)
        await self.login(client, b"s3cret")
        await waitForText(client.text, ">>> ")
        client.send(b"6 * 7\n")
        await waitForText(client.text, "42")
        # Twisted's telnet session asks again once logged in, and logs the
        # refusal (which the client sent before the line above).
        self.assertEqual(len(self.flushLoggedErrors(OptionRefused)), 1)

    async def test_stopCloses(self) -> None:
        """
        Stopping the service closes the sessions.
        """
        client = await self.connect()
        await self.login(client, b"s3cret")
        await waitForText(client.text, ">>> ")
        await self.proxy.stop()
        await client.lost


class Child(ProcessProtocol):
    """
    A child process whose output is collected.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()
        self.running = True
        self.reason: Failure | None = None

    def outReceived(self, data: bytes) -> None:
        """
        Keep stdout.
        """
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        """
        Fire L{ended} (with the reason, not as an error).
        """
        self.running = False
        self.reason = reason
        self.ended.callback(None)

    def text(self) -> str:
        """
        @return: The output so far, as a terminal would show it.
        """
        return screenText(self.output)


class Collect(Protocol):
    """
    Collects a command's output.

    @ivar reason: Why the command ended, once it has.
    """

    def __init__(self) -> None:
        self.data = b""
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Keep the output.
        """
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{ended} (with the reason kept, not as an error).
        """
        self.reason = reason
        self.ended.callback(None)


class SSHSessionTests(TestCase):
    """
    Real SSH sessions with the manhole of a running proxy.
    """

    timeout = SESSION_TIMEOUT

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.logs = captureLogs(self)
        self.key, private, line = clientKey("alice@laptop")
        self.identity = writeFile(self.directory, "id", private)
        self.keys = writeFile(self.directory, "keys", line, 0o644)
        self.passwd = writeFile(self.directory, "passwd", b"bob:pw\n")
        self.hostKey = os.path.join(self.directory, "host_key")
        self.port = freePort()
        _, green = startBackend(self, "green", echo("green"))
        _, blue = startBackend(self, "blue", echo("blue"))
        self.proxy = startProxy(
            self,
            green,
            blue,
            "--manhole-ssh",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--manhole-keys",
            self.keys,
            "--manhole-passwd",
            self.passwd,
            "--manhole-host-key",
            self.hostKey,
        )
        self.hostPublic = Key.fromFile(self.hostKey).public().toString("openssh")

    async def test_openssh(self) -> None:
        """
        OpenSSH logs in with a listed key (checking the host key from the
        created file), evaluates expressions and switches, recorded with the
        key's comment; Ctrl-D ends the session.
        """
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SkipTest("no ssh client")
        knownHosts = writeFile(
            self.directory,
            "known_hosts",
            f"[127.0.0.1]:{self.port} ".encode() + self.hostPublic + b"\n",
        )
        child = Child()
        args = [
            ssh,
            "-tt",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={knownHosts}",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            self.identity,
            "-p",
            str(self.port),
            "deploy@127.0.0.1",
        ]
        process = reactor.spawnProcess(
            child,
            ssh,
            args,
            env={"PATH": os.environ.get("PATH", ""), "HOME": self.directory},
        )

        async def stop() -> None:
            if child.running:
                process.signalProcess("KILL")
                await child.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        await waitForText(child.text, "logged in as deploy (key alice@laptop)")
        await waitForText(child.text, ">>> ")
        process.write(b"controller.active\r")
        await waitForText(child.text, "'green'")
        process.write(b'switch("blue")\r')
        await waitForText(
            child.text, "manual switch via manhole by deploy (key alice@laptop)"
        )
        self.assertEqual(self.proxy.controller.active, "blue")
        process.write(b"\x04")
        await child.ended
        self.assertEqual(
            self.proxy.controller.history[-1].reason,
            "manual switch via manhole by deploy (key alice@laptop)",
        )
        messages = [formatEvent(e) for e in self.logs.namespace("bluegreen.manhole")]
        self.assertIn("manhole: deploy (key alice@laptop) logged in (SSH)", messages)
        self.assertEqual(self.logs.errors(), [])

    async def test_conchPassword(self) -> None:
        """
        Twisted's SSH client logs in with a password; a command (rather
        than a shell) is refused with exit status 1.
        """
        from twisted.conch.endpoints import SSHCommandClientEndpoint

        knownHosts = writeFile(
            self.directory, "known_hosts", b"127.0.0.1 " + self.hostPublic + b"\n"
        )
        endpoint = SSHCommandClientEndpoint.newConnection(
            reactor,
            b"controller.active",
            b"bob",
            b"127.0.0.1",
            self.port,
            password=b"pw",
            knownHosts=knownHosts,
        )

        protocol = Collect()
        await connectProtocol(endpoint, protocol)
        await protocol.ended
        assert protocol.reason is not None
        ended = protocol.reason.value
        assert isinstance(ended, ProcessTerminated), protocol.reason
        self.assertEqual(ended.exitCode, 1)
        self.assertEqual(self.proxy.controller.active, "green")
        messages = [formatEvent(e) for e in self.logs.namespace("bluegreen.manhole")]
        self.assertIn("manhole: bob logged in (SSH)", messages)


class _OneSession:
    """
    A realm giving each telnet login a plain L{TelnetProtocol}, counting
    logouts.
    """

    def __init__(self) -> None:
        self.sessions: list[TelnetProtocol] = []
        self.logouts = 0

    def requestAvatar(
        self, avatarId: object, mind: object, *interfaces: object
    ) -> tuple[object, TelnetProtocol, Callable[[], None]]:
        session = TelnetProtocol()
        self.sessions.append(session)

        def logout() -> None:
            self.logouts += 1

        return ITelnetProtocol, session, logout


@implementer(ICredentialsChecker)
class _PendingChecker:
    """
    A checker whose answers the test gives.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes | tuple[()]]] = []

    def requestAvatarId(self, credentials: object) -> Deferred[bytes | tuple[()]]:
        d: Deferred[bytes | tuple[()]] = Deferred()
        self.pending.append(d)
        return d


class TelnetLoginTests(SynchronousTestCase):
    """
    L{TelnetLogin}'s timing, driven by a L{Clock}: a refusal is answered
    after L{TelnetLogin.failureDelay}, the last one closes the connection.
    """

    def setUp(self) -> None:
        directory = shortDirectory(self)
        passwd = writeFile(directory, "passwd", b"alice:s3cret\n")
        self.realm = _OneSession()
        self.clock = Clock()
        self.connect(PasswordFileChecker(passwd, None))

    def connect(self, checker: ICredentialsChecker) -> None:
        """
        Connect a login checking with C{checker} to L{wire}.
        """
        portal = Portal(cast(Any, self.realm), [checker])
        self.telnet = TelnetTransport(TelnetLogin, portal, self.clock)
        self.wire = StringTransport()
        self.telnet.makeConnection(self.wire)

    def shown(self) -> bytes:
        """
        @return: What the client was sent so far, telnet commands removed.
        """
        return re.sub(rb"\xff[\xfb-\xfe].", b"", self.wire.value())

    def attempt(self, password: bytes) -> None:
        """
        Log in as alice, agreeing to the server's echo changes.
        """
        self.telnet.dataReceived(b"alice\r\n" + IAC + DO + ECHO)
        self.telnet.dataReceived(password + b"\r\n" + IAC + DONT + ECHO)

    def test_refusalDelayed(self) -> None:
        """
        A wrong password is answered only after the delay, then the user
        name is asked for again; the right one then logs in.
        """
        self.attempt(b"wrong")
        self.clock.advance(TelnetLogin.failureDelay * 0.99)
        self.assertEqual(self.shown(), b"Username: Password: ")
        self.clock.advance(TelnetLogin.failureDelay * 0.01)
        self.assertEqual(
            self.shown(),
            b"Username: Password: \r\nAuthentication failed\r\nUsername: ",
        )
        self.attempt(b"s3cret")
        self.assertEqual(len(self.realm.sessions), 1)
        self.assertIs(self.telnet.protocol, self.realm.sessions[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lastAttemptDisconnects(self) -> None:
        """
        The last allowed wrong password closes the connection, after the
        delay.
        """
        for _ in range(TelnetLogin.maxAttempts):
            self.attempt(b"wrong")
            self.assertFalse(self.wire.disconnecting)
            self.clock.advance(TelnetLogin.failureDelay)
        self.assertTrue(self.wire.disconnecting)
        self.assertTrue(
            self.shown().endswith(b"\r\nAuthentication failed; disconnecting\r\n")
        )

    def test_lostCancelsAnswer(self) -> None:
        """
        A connection lost while a refusal waits leaves no timer behind.
        """
        self.attempt(b"wrong")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.telnet.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostWhileChecking(self) -> None:
        """
        A login that succeeds after the connection was lost is logged out at
        once, not handed a dead connection.
        """
        checker = _PendingChecker()
        self.connect(checker)
        self.attempt(b"s3cret")
        self.telnet.connectionLost(Failure(ConnectionDone()))
        checker.pending[0].callback(b"alice")
        self.assertEqual(self.realm.logouts, 1)
        self.assertFalse(self.realm.sessions[0].transport)


class SSHShellTests(SynchronousTestCase):
    """
    The SSH session channel's terminal handling.
    """

    def test_ptySize(self) -> None:
        """
        The terminal size comes from the pty request; a client that sends
        0 (no local terminal) gets 80x24.
        """
        shell = SSHShell(cast(Any, None))
        shell.getPty(b"xterm", (50, 132, 0, 0), [])
        self.assertEqual((shell.width, shell.height), (132, 50))
        shell.getPty(b"xterm", (0, 0, 0, 0), [])
        self.assertEqual((shell.width, shell.height), (80, 24))


class ManholeListenTests(TestCase):
    """
    The manhole listeners with the real reactor.
    """

    def test_portInUse(self) -> None:
        """
        If C{--manhole} (or C{--manhole-ssh}) is in use, starting the service
        raises a L{StartupError} naming the option and the socket error.
        """
        directory = shortDirectory(self)
        passwd = writeFile(directory, "passwd", b"alice:pw\n")
        for option, extra in [
            ("manhole", []),
            ("manhole-ssh", ["--manhole-host-key", os.path.join(directory, "hk")]),
        ]:
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                value = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
                service = makeService(
                    parse(
                        "--port",
                        "tcp:0:interface=127.0.0.1",
                        f"--{option}",
                        value,
                        "--manhole-passwd",
                        passwd,
                        *extra,
                    ),
                    reactor,
                )
                error = self.assertRaises(StartupError, service.privilegedStartService)
            self.assertEqual(
                error.code,
                f"bluegreen: cannot listen on --{option} {value}: "
                f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}",
            )
