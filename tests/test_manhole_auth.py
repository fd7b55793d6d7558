# -*- test-case-name: tests.test_manhole_auth -*-
"""
Tests for L{bluegreen.manhole.auth}: the password and authorized keys files,
their credential checkers, and the SSH host key.
"""

from __future__ import annotations

import os
import stat

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SkipTest, SynchronousTestCase

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
from tests._manhole import clientKey, hashed, shortDirectory, writeFile


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
