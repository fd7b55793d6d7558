# -*- test-case-name: tests.test_manhole_auth -*-
"""
Who may log in to a manhole, and who the SSH manhole is: the
C{--manhole-passwd} and C{--manhole-keys} files, their credential checkers,
and the C{--manhole-host-key}.

Both files are checked at start-up and read again at every login, so access
can be given or taken away without a restart; the file formats and the
permission rules are in L{bluegreen.manhole.service}'s docstring.

Keys are checked by Twisted's L{SSHPublicKeyChecker}, over the keys our file
lists at the moment of the login.  Passwords keep a checker of our own:
Twisted's L{twisted.cred.checkers.FilePasswordDB} compares with C{==} (not
in constant time), would run bcrypt on the reactor thread, splits the
password at every colon and checks no file permissions.
"""

from __future__ import annotations

import hmac
import os
import re
import stat
import tempfile
from collections.abc import Callable
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import FingerprintFormats, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import (
    ISSHPrivateKey,
    IUsernamePassword,
    SSHPrivateKey,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

_log = Logger(namespace="bluegreen.manhole")

T = TypeVar("T")

#: The largest password or authorized keys file read.
MAX_FILE = 1 << 20

_BCRYPT = re.compile(rb"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_OTHER_HASH = re.compile(rb"\$[0-9a-z-]+\$")
_USER = re.compile(rb"[^\s:#][^\s:]*")


class ManholeError(Exception):
    """
    A manhole file that cannot be used; the message names the option and
    says why.
    """


def displayName(name: bytes | str) -> str:
    """
    Make a user name (chosen by the client, with SSH keys) safe to put in
    logs and in the switch history.

    @param name: The name as the client sent it.
    @return: C{name} decoded, control characters replaced by C{?}, at most
        64 characters.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in name[:64])
    return text or "?"


def fingerprint(key: Key) -> str:
    """
    @param key: An SSH key.
    @return: C{key}'s fingerprint as OpenSSH shows it (C{SHA256:...}).
    """
    value: str = key.fingerprint(FingerprintFormats.SHA256_BASE64)
    return "SHA256:" + value.rstrip("=")


def _readPrivateFile(
    option: str, path: str, forbidden: int, risk: str, fix: str
) -> bytes:
    """
    Read a small regular file whose mode must not include C{forbidden}.

    @param option: The option naming the file, for messages.
    @param path: The file.
    @param forbidden: Mode bits that make it unusable.
    @param risk: What those bits would allow, for the message.
    @param fix: The C{chmod} mode to suggest.
    @return: The content.
    @raise ManholeError: If it cannot be read, is not a file, is too large,
        or its mode is too open.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ManholeError(f"--{option}: {path!r} is not a file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & forbidden:
            raise ManholeError(
                f"--{option}: {path!r} has mode {mode:04o}, so {risk}: chmod {fix} it"
            )
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise ManholeError(f"--{option}: cannot read {path!r}: {e.strerror}") from None
    if len(data) > MAX_FILE:
        raise ManholeError(f"--{option}: {path!r} is larger than {MAX_FILE} bytes")
    return data


# Passwords


def readPasswords(path: str) -> dict[bytes, bytes]:
    """
    Read a C{--manhole-passwd} file: C{user:password} lines, the password a
    bcrypt hash or plaintext.

    @param path: The file.
    @return: The password (or hash) by user name.
    @raise ManholeError: Naming the file (and line) and the problem.
    """
    option = "manhole-passwd"
    data = _readPrivateFile(
        option,
        path,
        0o027,
        "other users could read or change the manhole passwords",
        "600",
    )
    users: dict[bytes, bytes] = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        where = f"--{option}: {path!r} line {number}"
        user, colon, password = line.partition(b":")
        if not colon or not _USER.fullmatch(user):
            raise ManholeError(f"{where}: expected user:password")
        name = displayName(user)
        if not password:
            raise ManholeError(f"{where}: empty password for {name!r}")
        if user in users:
            raise ManholeError(f"{where}: {name!r} appears twice")
        if _OTHER_HASH.match(password) and not _BCRYPT.fullmatch(password):
            raise ManholeError(
                f"{where}: unsupported password hash for {name!r}; give a "
                "bcrypt hash ($2b$...) or the plaintext password"
            )
        users[user] = password
    if not users:
        raise ManholeError(f"--{option}: {path!r} has no user:password line")
    return users


def checkPassword(given: bytes, stored: bytes) -> bool:
    """
    @param given: The password a client sent.
    @param stored: The password file's entry: a bcrypt hash or plaintext.
    @return: Whether they match (compared in constant time).
    """
    if _BCRYPT.fullmatch(stored):
        import bcrypt

        return bool(bcrypt.checkpw(given, stored))
    return hmac.compare_digest(given, stored)


def _readForLogin(read: Callable[[str], T], path: str, who: str) -> T | None:
    """
    Read a checker's file afresh for a login (so edits apply at once).

    @param read: L{readPasswords} or L{readAuthorizedKeys}.
    @param path: The file.
    @param who: The user logging in, for the log.
    @return: What C{read} returned, or L{None} (logged) if the file cannot
        be used: the login is then refused.
    """
    try:
        return read(path)
    except ManholeError as e:
        _log.error("manhole: login as {user} refused: {error}", user=who, error=str(e))
        return None


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """
    Checks user names and passwords against a C{--manhole-passwd} file,
    read again for every login.  bcrypt hashes are checked in the reactor's
    thread pool (a check takes a good fraction of a second).

    @ivar path: The file.
    @ivar threads: Runs the bcrypt checks in its thread pool; with L{None}
        they run inline.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, threads: IReactorThreads | None) -> None:
        """
        @param path: The C{--manhole-passwd} file.
        @param threads: The reactor whose thread pool checks bcrypt hashes,
            or L{None} to check them inline.
        """
        self.path = path
        self.threads = threads

    def requestAvatarId(
        self, credentials: IUsernamePassword
    ) -> Deferred[bytes | tuple[()]]:
        """
        @param credentials: A user name and password.
        @return: A Deferred firing with the user name (for display, UTF-8),
            or failing with L{UnauthorizedLogin}.
        """
        username: bytes = credentials.username
        who = displayName(username)
        users = _readForLogin(readPasswords, self.path, who)
        if users is None:
            return fail(UnauthorizedLogin("cannot read the password file"))
        stored = users.get(username)
        if stored is None:
            _log.warn("manhole: login refused: unknown user {user}", user=who)
            return fail(UnauthorizedLogin("unknown user"))
        password: bytes = credentials.password
        checked: Deferred[bool]
        if _BCRYPT.fullmatch(stored) and self.threads is not None:
            checked = deferToThreadPool(
                self.threads,
                self.threads.getThreadPool(),
                checkPassword,
                password,
                stored,
            )
        else:
            checked = succeed(checkPassword(password, stored))

        def result(ok: bool) -> bytes | tuple[()]:
            if not ok:
                _log.warn("manhole: login refused: wrong password for {user}", user=who)
                raise UnauthorizedLogin("wrong password")
            return who.encode("utf-8")

        return checked.addCallback(result)


# Keys


def readAuthorizedKeys(path: str) -> list[tuple[Key, str]]:
    """
    Read a C{--manhole-keys} file (OpenSSH C{authorized_keys} without
    options): C{TYPE BASE64 [COMMENT]} lines, blank lines and C{#} comments
    ignored.

    Unlike L{twisted.conch.checkers.readAuthorizedKeyFile}, which skips
    lines it cannot parse, a bad line makes the whole file unusable: a key
    an operator meant to add must not be silently ignored.

    @param path: The file.
    @return: Each key with its comment (C{""} if none).
    @raise ManholeError: Naming the file (and line) and the problem.
    """
    option = "manhole-keys"
    data = _readPrivateFile(
        option, path, 0o022, "other users could add keys", "644 (or 600)"
    )
    found: list[tuple[Key, str]] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        parts = line.split()
        try:
            key = Key.fromString(b" ".join(parts[:2]))
        except Exception:
            key = None
        if key is None or not key.isPublic():
            raise ManholeError(
                f"--{option}: {path!r} line {number}: not a public key (expected "
                "TYPE BASE64 [COMMENT], as in ~/.ssh/id_ed25519.pub; options are "
                "not supported)"
            )
        found.append((key, displayName(b" ".join(parts[2:])) if parts[2:] else ""))
    if not found:
        raise ManholeError(f"--{option}: {path!r} has no public key")
    return found


@implementer(ICredentialsChecker)
class AuthorizedKeysChecker:
    """
    Checks SSH public keys against a C{--manhole-keys} file, read again for
    every login.  Any user name may log in with a listed key; the avatar ID
    names the key too: C{"deploy (key alice@laptop)"}.

    The check itself (a listed key, offered without a signature or with a
    valid one) is Twisted's L{SSHPublicKeyChecker}, given the keys the file
    lists for whatever user name the client gave.  This class reads the
    file, names the user and logs refusals.

    @ivar path: The file.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, path: str) -> None:
        """
        @param path: The C{--manhole-keys} file.
        """
        self.path = path

    def requestAvatarId(
        self, credentials: SSHPrivateKey
    ) -> Deferred[bytes | tuple[()]]:
        """
        @param credentials: An SSH public key, signed or not.
        @return: A Deferred firing with the user and key (for display,
            UTF-8), or failing with L{twisted.conch.error.ValidPublicKey} (a
            key offered without a signature: the client is asked to sign)
            or L{UnauthorizedLogin}.
        """
        username: bytes = credentials.username
        who = displayName(username)
        authorized = _readForLogin(readAuthorizedKeys, self.path, who)
        if authorized is None:
            return fail(UnauthorizedLogin("cannot read the authorized keys"))
        checker = SSHPublicKeyChecker(
            InMemorySSHKeyDB({username: [key for key, _ in authorized]})
        )
        checked: Deferred[bytes | tuple[()]] = checker.requestAvatarId(credentials)

        def named(user: bytes | tuple[()]) -> bytes:
            offered = Key.fromString(credentials.blob)
            comment = next((c for key, c in authorized if key == offered), "")
            return f"{who} (key {comment or fingerprint(offered)})".encode()

        def refused(failure: Failure) -> Failure:
            if failure.check(ValidPublicKey):
                return failure
            if not failure.check(UnauthorizedLogin):
                # Only parsing the offered key raises anything else
                # (BadKeyError, or a decoding error for a truncated blob).
                return Failure(UnauthorizedLogin("not a public key"))
            offered = Key.fromString(credentials.blob)
            if any(key == offered for key, _ in authorized):
                _log.warn("manhole: bad SSH key signature from {user}", user=who)
            else:
                _log.info(
                    "manhole: SSH key {fingerprint} of {user} is not in {path}",
                    fingerprint=fingerprint(offered),
                    user=who,
                    path=self.path,
                )
            return failure

        return checked.addCallbacks(named, refused)


# The host key


def defaultHostKeyPath() -> str:
    """
    Where the SSH host key is kept without C{--manhole-host-key}.

    @return: C{$XDG_STATE_HOME/bluegreen/manhole_host_key}, with
        C{~/.local/state} when C{XDG_STATE_HOME} is unset or relative.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "bluegreen", "manhole_host_key")


def loadHostKey(path: str) -> tuple[Key, bool]:
    """
    Load the SSH host key, creating it first if it does not exist.

    A new key is an Ed25519 key in OpenSSH format, written to a temporary
    file created with mode 0600 in the same directory, then hard-linked to
    C{path}: the key is never visible half written, never readable by other
    users, and never replaces a key that appeared meanwhile.  A missing
    directory is created with mode 0700.

    @param path: The C{--manhole-host-key} file.
    @return: The private key, and whether it was created.
    @raise ManholeError: If the key cannot be read or created, or is
        readable by other users.
    """
    option = "manhole-host-key"
    created = False
    if not os.path.lexists(path):
        _createHostKey(path)
        created = True
    data = _readPrivateFile(
        option, path, 0o077, "other users could read the SSH host key", "600"
    )
    try:
        key = Key.fromString(data)
    except Exception as e:
        raise ManholeError(
            f"--{option}: {path!r} is not an unencrypted SSH private key ({e})"
        ) from None
    if key.isPublic():
        raise ManholeError(
            f"--{option}: {path!r} holds a public key; the private key is needed"
        )
    return key, created


def _createHostKey(path: str) -> None:
    """
    Generate a host key at C{path} (see L{loadHostKey}).

    @param path: Where.
    @raise ManholeError: If it cannot be written.
    """
    option = "manhole-host-key"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ManholeError(
            f"--{option}: cannot create the directory {directory!r}: {e.strerror}"
        ) from None
    private = ed25519.Ed25519PrivateKey.generate()
    data = private.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    try:
        # mkstemp: O_CREAT | O_EXCL, mode 0600 whatever the umask.
        fd, temporary = tempfile.mkstemp(
            dir=directory, prefix=".manhole_host_key.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                # Another process made one meanwhile: use that.
                pass
        finally:
            os.unlink(temporary)
    except OSError as e:
        raise ManholeError(
            f"--{option}: cannot create {path!r}: {e.strerror}"
        ) from None
