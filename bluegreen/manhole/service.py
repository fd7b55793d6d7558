# -*- test-case-name: tests.test_manhole -*-
"""
The manhole: a Python prompt inside the running proxy, for operators.

Both manholes are off by default::

    --manhole ENDPOINT       telnet; needs --manhole-passwd, and may only
                             listen on loopback or a UNIX socket
    --manhole-ssh ENDPOINT   SSH; needs --manhole-keys and/or
                             --manhole-passwd
    --manhole-passwd FILE    user:password lines
    --manhole-keys FILE      OpenSSH authorized_keys
    --manhole-host-key FILE  the SSH host key (created if missing)

A login gets a Python prompt whose namespace holds the live objects under
plain names: C{controller}, C{proxy}, C{health}, C{pools}, C{service},
C{reactor}, C{pprint}, and three helpers: C{status()} (the live environment
and health in short), C{switch(to, force=False)} (a switch recorded as the
logged-in user's: C{"manual switch via manhole by alice"}) and C{help()},
which lists them all.  More objects (the flags and sync services) are added
with L{Manhole.add}.  Each session has a namespace of its own, so variables
one operator sets are not seen by another.

Security decisions:

  - A manhole runs any Python code inside the proxy, on the reactor thread.
    Logins, logouts and switches are logged.
  - The telnet manhole sends passwords and code unencrypted, so it is
    refused at start-up unless it listens on loopback (C{127.0.0.0/8},
    C{::1}, C{localhost}) or a UNIX socket (give C{:mode=600} to keep other
    local users away from the socket).  A wrong password is answered after
    a second; the third closes the connection.
  - The SSH manhole may listen anywhere (it is encrypted and needs a key or
    password), but one other machines can reach is logged as a warning at
    start-up.  Conch delays each wrong password by a second.
  - C{--manhole-passwd}: one C{user:password} per line, blank lines and
    C{#} comments ignored.  The password is everything after the first
    colon: either a bcrypt hash (C{$2b$...}, made with e.g. C{python -c
    "import bcrypt; print(bcrypt.hashpw(b'secret', bcrypt.gensalt()).decode())"})
    or the plaintext password.  Other C{$id$} hashes are refused.  The file
    must not be readable or writable by other users, nor writable by its
    group (C{chmod 600}, or C{640} for a service group).
  - C{--manhole-keys}: one public key per line (C{TYPE BASE64 [COMMENT]}, no
    OpenSSH options); it must not be writable by group or others.  Any user
    name may log in with a listed key; the key's comment (or fingerprint) is
    recorded with it, e.g. C{"deploy (key alice@laptop)"}.
  - Both files are checked at start-up, and read again at every login, so
    access can be given or taken away without a restart.
  - C{--manhole-host-key} defaults to
    C{$XDG_STATE_HOME/bluegreen/manhole_host_key} (that is,
    C{~/.local/state/bluegreen/manhole_host_key}).  A missing key is
    generated (Ed25519, OpenSSH format) in a file created with mode 0600
    (its directory, if created, gets 0700) and only then linked into place,
    so it is never seen half written or readable by others.  An existing key
    readable by group or others is refused, as OpenSSH does.  Its
    fingerprint is logged at every start.

C{twisted.conch.manhole} (and the SSH factory) import the global reactor, so
they are imported only when a manhole is built, never when this module is.
"""

from __future__ import annotations

import functools
import hmac
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pprint import pprint
from typing import TYPE_CHECKING, Any

from attrs import frozen
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from twisted.application.service import Service
from twisted.conch.avatar import ConchUser
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.ssh.keys import FingerprintFormats, Key
from twisted.conch.ssh.session import SSHSession, SSHSessionProcessProtocol
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION, SSHServerTransport
from twisted.conch.telnet import (
    ECHO,
    AuthenticatingTelnetProtocol,
    ITelnetProtocol,
    TelnetBootstrapProtocol,
    TelnetTransport,
)
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import (
    ISSHPrivateKey,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.error import ConnectionDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, ServerFactory, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from bluegreen import __version__
from bluegreen.exposure import exposedInterface

if TYPE_CHECKING:
    from bluegreen.controller import Controller, Switch
    from bluegreen.health import HealthMonitor
    from bluegreen.service.tap import ProxyService

_log = Logger(namespace="bluegreen.manhole")

#: The largest password or authorized keys file read.
MAX_FILE = 1 << 20

#: Endpoints to suggest in messages.
TELNET_EXAMPLES = "tcp:6023:interface=127.0.0.1, unix:/run/bluegreen/manhole.sock"
SSH_EXAMPLES = "tcp:6022:interface=127.0.0.1, tcp:6022"

_BCRYPT = re.compile(rb"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_OTHER_HASH = re.compile(rb"\$[0-9a-z-]+\$")
_USER = re.compile(rb"[^\s:#][^\s:]*")

# Endpoint strings are parsed, not listened on, while options are checked.
_NO_REACTOR: Any = object()


class ManholeError(Exception):
    """
    A manhole file that cannot be used; the message names the option and
    says why.
    """


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


def fingerprint(key: Key) -> str:
    """
    @return: C{key}'s fingerprint as OpenSSH shows it (C{SHA256:...}).
    """
    value: str = key.fingerprint(FingerprintFormats.SHA256_BASE64)
    return "SHA256:" + value.rstrip("=")


def displayName(name: bytes | str) -> str:
    """
    Make a user name (chosen by the client, with SSH keys) safe to put in
    logs and in the switch history.

    @return: C{name} decoded, control characters replaced by C{?}, at most
        64 characters.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in name[:64])
    return text or "?"


def _readPrivateFile(
    option: str, path: str, forbidden: int, risk: str, fix: str
) -> bytes:
    """
    Read a small regular file whose mode must not include C{forbidden}.

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


def readPasswords(path: str) -> dict[bytes, bytes]:
    """
    Read a C{--manhole-passwd} file: C{user:password} lines, the password a
    bcrypt hash or plaintext (see the module docstring).

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


def readAuthorizedKeys(path: str) -> list[tuple[Key, str]]:
    """
    Read a C{--manhole-keys} file (OpenSSH C{authorized_keys} without
    options): C{TYPE BASE64 [COMMENT]} lines, blank lines and C{#} comments
    ignored.

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


@frozen
class ManholeSettings:
    """
    Checked manhole options.

    @ivar telnet: The telnet manhole's endpoint description, or L{None}.
    @ivar ssh: The SSH manhole's endpoint description, or L{None}.
    @ivar passwd: The C{--manhole-passwd} file, or L{None}.
    @ivar keys: The C{--manhole-keys} file (SSH only), or L{None}.
    @ivar hostKey: The SSH host key file.
    """

    telnet: str | None
    ssh: str | None
    passwd: str | None
    keys: str | None
    hostKey: str


def telnetExposure(description: str) -> str | None:
    """
    Say why the telnet manhole may not listen on an endpoint.

    @param description: A valid server endpoint description.
    @return: L{None} for loopback TCP (or TLS) and UNIX sockets; otherwise
        why not, e.g. C{"listens on all interfaces"}.
    """
    endpoint = serverFromString(_NO_REACTOR, description)
    if isinstance(endpoint, UNIXServerEndpoint):
        return None
    if isinstance(
        endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)
    ):
        where = exposedInterface(description)
        return None if where is None else f"listens on {where}"
    return "is neither loopback TCP nor a UNIX socket"


def checkOptions(
    options: Mapping[str, Any], telnet: str | None, ssh: str | None
) -> ManholeSettings | None:
    """
    Check the manhole options (the endpoints already parsed).

    @param options: The parsed options: C{manhole}, C{manhole-ssh},
        C{manhole-passwd}, C{manhole-keys}, C{manhole-host-key}.
    @param telnet: C{--manhole} as an endpoint description, or L{None}.
    @param ssh: C{--manhole-ssh} as an endpoint description, or L{None}.
    @return: The settings, or L{None} if neither manhole is on (then the
        other manhole options are ignored).
    @raise usage.UsageError: Naming the option and the problem.
    """
    if telnet is None and ssh is None:
        return None
    passwd: str | None = options["manhole-passwd"]
    keys: str | None = options["manhole-keys"]
    if telnet is not None:
        if passwd is None:
            raise usage.UsageError(
                "--manhole: the telnet manhole needs --manhole-passwd FILE "
                "(user:password lines)"
                + ("; --manhole-keys is for --manhole-ssh" if keys else "")
            )
        problem = telnetExposure(telnet)
        if problem is not None:
            raise usage.UsageError(
                f"--manhole: {options['manhole']!r} {problem}; the telnet "
                "manhole sends passwords and Python code unencrypted, so it may "
                "listen only on loopback or a UNIX socket (e.g. --manhole "
                "tcp:6023:interface=127.0.0.1 or --manhole "
                "unix:/run/bluegreen/manhole.sock:mode=600); use --manhole-ssh "
                "to reach it from other machines"
            )
    if ssh is not None and passwd is None and keys is None:
        raise usage.UsageError(
            "--manhole-ssh: the SSH manhole needs --manhole-keys FILE "
            "(authorized_keys) or --manhole-passwd FILE (user:password lines)"
        )
    try:
        if passwd is not None:
            readPasswords(passwd)
        if ssh is not None and keys is not None:
            readAuthorizedKeys(keys)
    except ManholeError as e:
        raise usage.UsageError(str(e)) from None
    hostKey: str = options["manhole-host-key"] or defaultHostKeyPath()
    if ssh is not None and os.path.isdir(hostKey):
        raise usage.UsageError(
            f"--manhole-host-key: {hostKey!r} is a directory; give the key's file"
        )
    return ManholeSettings(
        telnet=telnet,
        ssh=ssh,
        passwd=passwd,
        keys=keys if ssh is not None else None,
        hostKey=hostKey,
    )


# Logging in


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """
    Checks user names and passwords against a C{--manhole-passwd} file,
    read again for every login.  bcrypt hashes are checked in the reactor's
    thread pool (a check takes a good fraction of a second).

    @ivar path: The file.
    @ivar reactor: Runs the bcrypt checks in its thread pool (they run
        inline if it has none).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self.reactor = reactor

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        """
        @param credentials: An L{IUsernamePassword}.
        @return: A Deferred firing with the user name (for display, UTF-8),
            or failing with L{UnauthorizedLogin}.
        """
        username: bytes = credentials.username
        who = displayName(username)
        try:
            users = readPasswords(self.path)
        except ManholeError as e:
            _log.error(
                "manhole: login as {user} refused: {error}", user=who, error=str(e)
            )
            return fail(UnauthorizedLogin("cannot read the password file"))
        stored = users.get(username)
        if stored is None:
            _log.warn("manhole: login refused: unknown user {user}", user=who)
            return fail(UnauthorizedLogin("unknown user"))
        pool = getattr(self.reactor, "getThreadPool", None)
        checked: Deferred[bool]
        if _BCRYPT.fullmatch(stored) and pool is not None:
            checked = deferToThreadPool(
                self.reactor, pool(), checkPassword, credentials.password, stored
            )
        else:
            checked = succeed(checkPassword(credentials.password, stored))

        def result(ok: bool) -> bytes | tuple[()]:
            if not ok:
                _log.warn("manhole: login refused: wrong password for {user}", user=who)
                raise UnauthorizedLogin("wrong password")
            return who.encode("utf-8")

        return checked.addCallback(result)


@implementer(ICredentialsChecker)
class AuthorizedKeysChecker:
    """
    Checks SSH public keys against a C{--manhole-keys} file, read again for
    every login.  Any user name may log in with a listed key; the avatar ID
    names the key too: C{"deploy (key alice@laptop)"}.

    @ivar path: The file.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, path: str) -> None:
        self.path = path

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        """
        @param credentials: An L{ISSHPrivateKey}.
        @return: A Deferred firing with the user and key (for display,
            UTF-8), or
            failing with L{ValidPublicKey} (a listed key offered without a
            signature) or L{UnauthorizedLogin}.
        """
        who = displayName(credentials.username)
        try:
            offered = Key.fromString(credentials.blob)
        except Exception:
            return fail(UnauthorizedLogin("not a public key"))
        try:
            authorized = readAuthorizedKeys(self.path)
        except ManholeError as e:
            _log.error(
                "manhole: login as {user} refused: {error}", user=who, error=str(e)
            )
            return fail(UnauthorizedLogin("cannot read the authorized keys"))
        comments = [comment for key, comment in authorized if key == offered]
        if not comments:
            _log.info(
                "manhole: SSH key {fingerprint} of {user} is not in {path}",
                fingerprint=fingerprint(offered),
                user=who,
                path=self.path,
            )
            return fail(UnauthorizedLogin("key not authorized"))
        if not credentials.signature:
            return fail(ValidPublicKey())
        if not offered.verify(credentials.signature, credentials.sigData):
            _log.warn("manhole: bad SSH key signature from {user}", user=who)
            return fail(UnauthorizedLogin("bad signature"))
        who = f"{who} (key {comments[0] or fingerprint(offered)})"
        return succeed(who.encode("utf-8"))


class _TelnetLogin(AuthenticatingTelnetProtocol):
    """
    Asks for a user name and a password (not echoed), then hands the
    connection to the manhole.  A refusal is answered after
    L{failureDelay} seconds; after L{maxAttempts} the connection is closed.

    Unlike Twisted's login, it copes with a password typed ahead (before
    the client has agreed to stop echoing) and with a client that refuses
    to stop echoing: the login goes on once the negotiation is over.
    """

    _echoOff: Deferred[Any] | None = None

    maxAttempts = 3
    failureDelay = 1.0

    def __init__(self, portal: Portal, clock: IReactorTime) -> None:
        super().__init__(portal)
        self.clock = clock
        self.failures = 0
        self._pending: IDelayedCall | None = None

    def lineReceived(self, line: bytes) -> None:
        """
        Take a line, without the CR (or CR NUL) some clients end it with.
        """
        super().lineReceived(line.rstrip(b"\r\0"))

    def telnet_User(self, line: bytes) -> str:
        """
        Take the user name; ask the client to let us echo (that is, not to
        show the password), and ask for the password.
        """
        transport: Any = self.transport
        self.username = line
        self._echoOff = transport.will(ECHO)
        # Refused: the client shows the password as it is typed.
        self._echoOff.addErrback(lambda failure: None)
        transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line: bytes) -> str:
        """
        Take the password; once echo is settled, turn it back to the
        client's and check the credentials.
        """
        transport: Any = self.transport
        username, password = self.username, line
        del self.username

        def echoOn(result: object) -> Deferred[Any]:
            d: Deferred[Any] = transport.wont(ECHO)
            return d

        def login(result: object) -> None:
            credentials = UsernamePassword(username, password)
            d = self.portal.login(credentials, None, ITelnetProtocol)
            d.addCallback(self._cbLogin)
            d.addErrback(self._ebLogin)

        echo = self._echoOff if self._echoOff is not None else succeed(None)
        self._echoOff = None
        echo.addCallback(echoOn).addBoth(login)
        return "Discard"

    def _ebLogin(self, failure: Failure) -> None:
        if not failure.check(UnauthorizedLogin):
            _log.failure("manhole: telnet login failed", failure)
        self.failures += 1
        self._pending = self.clock.callLater(self.failureDelay, self._refused)

    def _refused(self) -> None:
        self._pending = None
        assert self.transport is not None
        if self.failures >= self.maxAttempts:
            self.transport.write(b"\r\nAuthentication failed; disconnecting\r\n")
            self.transport.loseConnection()
            return
        self.transport.write(b"\r\nAuthentication failed\r\nUsername: ")
        self.state = "User"

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Cancel a pending refusal.
        """
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        super().connectionLost(reason)


class _TelnetSession(TelnetBootstrapProtocol):
    """
    A logged-in telnet connection: negotiates the terminal, then runs the
    manhole.  It calls C{logout} when the connection ends (Twisted's login
    protocol does not, once it has handed the connection over).
    """

    logout: Callable[[], None] | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        End the manhole session and log out.
        """
        try:
            super().connectionLost(reason)
        finally:
            if self.logout is not None:
                self.logout()


class _TelnetFactory(ServerFactory):
    """
    Builds telnet connections that log in through C{portal}.
    """

    noisy = False

    def __init__(self, portal: Portal, clock: IReactorTime) -> None:
        self.portal = portal
        self.clock = clock

    def buildProtocol(self, addr: Any) -> TelnetTransport:
        """
        @return: A telnet connection whose application is the login.
        """
        protocol = TelnetTransport(_TelnetLogin, self.portal, self.clock)
        protocol.factory = self
        return protocol


class _SSHTransport(SSHServerTransport):
    """
    The SSH server side of a connection, logging an ordinary disconnection
    (a user logging out) as such rather than as an error.
    """

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        """
        The client disconnected, saying why.
        """
        if reasonCode == DISCONNECT_BY_APPLICATION:
            self._log.info(
                "SSH client disconnected: {description}", description=description
            )
        else:
            super().receiveError(reasonCode, description)


@implementer(ISession)
class _SSHShell:
    """
    One SSH session channel: a manhole on a terminal.  Commands
    (C{ssh host COMMAND}) are refused with a message and exit status 1.
    """

    width = 80
    height = 24

    def __init__(self, user: _SSHUser) -> None:
        self.user = user
        self._proto: SSHSessionProcessProtocol | None = None
        self._terminal: Any = None

    def getPty(self, term: bytes, windowSize: Any, modes: Any) -> None:
        """
        Remember the terminal's size (rows, columns, ...); a client that
        does not know it (sending 0) gets 80x24.
        """
        rows, columns = windowSize[:2]
        self.height, self.width = rows or 24, columns or 80

    def openShell(self, proto: SSHSessionProcessProtocol) -> None:
        """
        Start the manhole on the channel.
        """
        from twisted.conch.insults.insults import ServerProtocol
        from twisted.conch.manhole_ssh import TerminalSessionTransport

        manhole = self.user.manhole
        self._terminal = ServerProtocol(
            manholeProtocol(),
            manhole.namespaceFor(self.user.who),
            manhole.banner(self.user.who),
        )
        self._proto = proto
        TerminalSessionTransport(
            proto, self._terminal, self.user, self.width, self.height
        )

    def execCommand(self, proto: SSHSessionProcessProtocol, command: bytes) -> None:
        """
        Refuse a command: say so on stderr and exit with status 1 (once the
        request has been answered).
        """

        def refuse() -> None:
            proto.errReceived(
                b"bluegreen manhole: commands are not supported; log in "
                b"without one for a Python prompt\r\n"
            )
            proto.processEnded(Failure(ProcessTerminated(exitCode=1)))

        self.user.manhole.clock.callLater(0, refuse)

    def windowChanged(self, newWindowSize: Any) -> None:
        """
        Tell the manhole the terminal's new size.
        """
        rows, columns = newWindowSize[:2]
        if self._terminal is not None:
            self._terminal.terminalProtocol.terminalSize(columns, rows)

    def eofReceived(self) -> None:
        """
        The client has no more input: end the session.
        """
        if self._proto is not None:
            self._proto.loseConnection()

    def closed(self) -> None:
        """
        The channel is closed: end the manhole.
        """
        terminal, self._terminal = self._terminal, None
        if terminal is not None:
            terminal.connectionLost(Failure(ConnectionDone()))


class _SSHUser(ConchUser):
    """
    A logged-in SSH user: may open session channels, each a manhole.

    @ivar manhole: The manhole.
    @ivar who: The user, for the namespace and the logs.
    """

    def __init__(self, manhole: Manhole, who: str) -> None:
        super().__init__()
        self.manhole = manhole
        self.who = who
        self.channelLookup[b"session"] = SSHSession

    def __conform__(self, interface: type[Interface]) -> Any:
        """
        A new L{_SSHShell} for each session channel.
        """
        if interface is ISession:
            return _SSHShell(self)
        return None


@implementer(IRealm)
class _Realm:
    """
    Gives a logged-in user a manhole (telnet or SSH), logging the login and
    the logout.
    """

    def __init__(self, manhole: Manhole) -> None:
        self.manhole = manhole

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        """
        @return: A telnet session or an SSH user, and the logout.
        """
        who = displayName(avatarId)
        kind: str
        interface: Any
        if ITelnetProtocol in interfaces:
            kind, interface = "telnet", ITelnetProtocol
        elif IConchUser in interfaces:
            kind, interface = "SSH", IConchUser
        else:
            raise NotImplementedError(interfaces)
        _log.info(
            "manhole: {user} logged in ({kind})",
            user=who,
            kind=kind,
            event="manhole-login",
        )
        done: list[bool] = []

        def logout() -> None:
            if not done:
                done.append(True)
                _log.info(
                    "manhole: {user} logged out ({kind})",
                    user=who,
                    kind=kind,
                    event="manhole-logout",
                )

        avatar: Any
        if interface is ITelnetProtocol:
            from twisted.conch.insults.insults import ServerProtocol

            avatar = _TelnetSession(
                ServerProtocol,
                manholeProtocol(),
                self.manhole.namespaceFor(who),
                self.manhole.banner(who),
            )
            avatar.logout = logout
        else:
            avatar = _SSHUser(self.manhole, who)
        return interface, avatar, logout


@functools.cache
def manholeProtocol() -> type:
    """
    The manhole's terminal protocol: Twisted's colored Python prompt with a
    banner.  (Defined on first use: C{twisted.conch.manhole} imports the
    global reactor.)

    @return: A L{twisted.conch.manhole.ColoredManhole} subclass taking
        C{(namespace, banner)}.
    """
    from twisted.conch.manhole import ColoredManhole

    class BluegreenManhole(ColoredManhole):
        """
        A colored Python prompt that starts with a banner.
        """

        def __init__(self, namespace: dict[str, Any], banner: str) -> None:
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


class _Sessions(WrappingFactory):
    """
    Keeps track of a listener's connections, to close them on stop.
    """

    noisy = False

    def __init__(self, factory: Factory[Any], prefix: str) -> None:
        super().__init__(factory)
        self.prefix = prefix

    def logPrefix(self) -> str:
        """
        @return: What the listener's log lines start with.
        """
        return self.prefix

    def closeAll(self) -> None:
        """
        Close every connection.
        """
        for protocol in list(self.protocols):
            protocol.transport.loseConnection()


# The namespace


class Text(str):
    """
    Text that the manhole shows as it is: its C{repr} is itself.
    """

    def __repr__(self) -> str:
        return str(self)


def _ago(seconds: float) -> str:
    if seconds < 1:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


def describeStatus(
    controller: Controller, health: HealthMonitor | None, clock: IReactorTime
) -> str:
    """
    The live environment and each environment's health, in a few lines.

    @param controller: The switch.
    @param health: The health monitor, if any.
    @param clock: Supplies the time, for "checked 2 s ago".
    @return: The text (no trailing newline).
    """
    now = clock.seconds()
    live = controller.live
    lines = [
        f"live: {live.name} ({controller.why}); mode: {controller.mode}",
    ]
    states = {} if health is None else health.health
    width = max(len(name) for name in controller.environments)
    for name, environment in controller.environments.items():
        state = states.get(name)
        up = {True: "up", False: "down", None: "unknown"}[
            None if state is None else state.up
        ]
        check = "not checked yet"
        if state is not None and state.last is not None:
            last = state.last
            check = (
                f"last check {last.reason}"
                + ("" if last.passive else f" in {last.latency * 1000:.0f} ms")
                + f", {_ago(now - last.when)}"
            )
        marker = "  <- live" if name == live.name else ""
        lines.append(f"  {name:<{width}}  {up:<7}  {environment.url}  {check}{marker}")
    if controller.history:
        latest = controller.history[-1]
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(latest.when))
        lines.append(
            f"last switch: {when} {latest.source} -> {latest.to} ({latest.reason}); "
            f"{len(controller.history)} in all"
        )
    else:
        lines.append("no switch yet")
    return "\n".join(lines)


class Manhole(Service):
    """
    The manholes of one bluegreen service: the namespace, the listeners'
    factories, and the sessions (closed when the service stops).

    It is a child of the L{ProxyService}; the listeners are its siblings
    (see L{bluegreen.service.tap.makeService}).

    @ivar settings: The checked options.
    @ivar service: The bluegreen service whose objects the namespace holds.
    @ivar clock: The reactor.
    @ivar hostKey: The SSH host key (L{None} without C{--manhole-ssh}).
    @ivar createdKey: Whether the host key was created at this start.
    """

    def __init__(
        self,
        settings: ManholeSettings,
        service: ProxyService,
        reactor: Any,
        hostKey: Key | None = None,
        createdKey: bool = False,
    ) -> None:
        self.settings = settings
        self.service = service
        self.clock = reactor
        self.hostKey = hostKey
        self.createdKey = createdKey
        self._entries: dict[str, tuple[Any, str]] = {}
        self._sessions: list[_Sessions] = []
        self.add("controller", service.controller, "the switch: .active, .history")
        self.add("proxy", service.resource, "the proxy resource")
        self.add("health", service.health, "the health monitor: .health['blue'].up")
        self.add("pools", service.pools, "upstream connection pools by environment")
        self.add("service", service, "the bluegreen service tree")
        self.add("reactor", reactor, "the reactor (everything here runs on it)")
        self.add("pprint", pprint, "pprint.pprint")

    @classmethod
    def create(
        cls, settings: ManholeSettings, service: ProxyService, reactor: Any
    ) -> Manhole:
        """
        Make the manhole, loading (or creating) the SSH host key.

        @raise ManholeError: If the host key cannot be used.
        """
        hostKey, created = None, False
        if settings.ssh is not None:
            hostKey, created = loadHostKey(settings.hostKey)
        return cls(settings, service, reactor, hostKey, created)

    def add(self, name: str, value: Any, description: str) -> None:
        """
        Put C{value} in every new session's namespace as C{name}, listed by
        C{help()} with C{description}.

        @param name: A Python identifier.
        @param value: The object.
        @param description: A few words for C{help()}.
        """
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not a Python name")
        self._entries[name] = (value, description)

    def namespaceFor(self, who: str) -> dict[str, Any]:
        """
        A new session's namespace.

        @param who: The logged-in user (recorded with each switch).
        @return: The objects by name, with C{switch}, C{status} and C{help}.
        """
        namespace = {name: value for name, (value, _) in self._entries.items()}
        namespace["switch"] = functools.partial(self.switch, who)
        namespace["status"] = self.status
        namespace["help"] = functools.partial(self.help, who)
        if getattr(self.service, "flags", None) is not None:
            namespace["setFlag"] = functools.partial(self.setFlag, who)
            namespace["unsetFlag"] = functools.partial(self.unsetFlag, who)
        return namespace

    def setFlag(self, who: str, env: str, name: str, value: str) -> Deferred[Any]:
        """
        Set a feature flag in C{env}'s Redis, recorded as C{who}'s change
        from the manhole.  The value is stored as given (C{"ON"} is on).

        @return: A Deferred firing with the L{bluegreen.flags.model.FlagChange}
            (the manhole prints it when it fires).
        """
        flags = self.service.flags
        assert flags is not None
        return Deferred.fromCoroutine(flags.set(env, name, value, f"manhole {who}"))

    def unsetFlag(self, who: str, env: str, name: str) -> Deferred[Any]:
        """
        Remove a feature flag from C{env}'s Redis, recorded as C{who}'s.

        @return: A Deferred firing with the L{bluegreen.flags.model.FlagChange}.
        """
        flags = self.service.flags
        assert flags is not None
        return Deferred.fromCoroutine(flags.unset(env, name, f"manhole {who}"))

    def switch(
        self, who: str, to: str, force: bool = False
    ) -> Switch | Deferred[Switch]:
        """
        Switch traffic to C{to}, recording C{who} did it from the manhole.

        @param who: The logged-in user.
        @param to: C{"green"} or C{"blue"}.
        @param force: Switch even if C{to} is down.
        @return: The switch made.
        @raise bluegreen.controller.SwitchRefused: If C{to} is live already,
            or down (without C{force}).
        @raise bluegreen.controller.UnknownEnvironment: For another name.
        """
        from bluegreen.controller import SwitchRefused

        controller = self.service.controller
        reason = f"manual switch via manhole by {who}" + (", forced" if force else "")
        _log.info(
            "manhole: {user} switches to {to}{forced}",
            user=who,
            to=to,
            forced=" (forced)" if force else "",
            event="manhole-switch",
        )
        try:
            if controller.beforeSwitch is not None:
                # Sync first: a Deferred (the manhole prints its result).
                planned = Deferred.fromCoroutine(
                    controller.plannedSwitch(to, reason, force=force)
                )
                return planned.addCallback(lambda result: result[0])
            return controller.switch(to, reason, force=force)
        except SwitchRefused as e:
            _log.warn(
                "manhole: switch to {to} by {user} refused: {why}",
                to=to,
                user=who,
                why=str(e),
                event="manhole-switch-refused",
            )
            raise

    def status(self) -> Text:
        """
        @return: The live environment and each environment's health.
        """
        return Text(
            describeStatus(self.service.controller, self.service.health, self.clock)
        )

    def help(self, who: str | None = None) -> Text:
        """
        @param who: The logged-in user, if known.
        @return: What the namespace holds.
        """
        rows = [
            ("status()", "the live environment and health, in short"),
            (
                "switch(to, force=False)",
                'switch traffic to "green" or "blue", recorded as yours',
            ),
            *(
                [
                    (
                        "setFlag(env, name, value)",
                        'set a flag, e.g. "blue", "RECENT", "ON"',
                    ),
                    ("unsetFlag(env, name)", "remove a flag"),
                ]
                if getattr(self.service, "flags", None) is not None
                else []
            ),
            *((name, description) for name, (_, description) in self._entries.items()),
            ("help()", "this text"),
        ]
        width = max(len(name) for name, _ in rows)
        user = f", logged in as {who}" if who else ""
        lines = [
            f"bluegreen {__version__} manhole{user}: Python inside the running proxy.",
            "Everything runs on the reactor thread: a slow expression stops "
            "all proxying.",
            "",
            *(f"  {name:<{width}}  {description}" for name, description in rows),
            "",
            "Ctrl-D logs out.",
        ]
        return Text("\n".join(lines))

    def banner(self, who: str) -> str:
        """
        @return: The first lines of a session.
        """
        return (
            f"bluegreen {__version__} manhole, logged in as {who}; "
            "type help() for the names, Ctrl-D to log out."
        )

    def _portal(self, telnet: bool) -> Portal:
        checkers: list[Any] = []
        if self.settings.keys is not None and not telnet:
            checkers.append(AuthorizedKeysChecker(self.settings.keys))
        if self.settings.passwd is not None:
            checkers.append(PasswordFileChecker(self.settings.passwd, self.clock))
        return Portal(_Realm(self), checkers)

    def listeners(self) -> list[tuple[str, str, Factory[Any]]]:
        """
        The factories to listen with, one per manhole that is on.

        @return: C{(option, endpoint description, factory)} tuples, the
            option being C{"manhole"} or C{"manhole-ssh"}.
        """
        found: list[tuple[str, str, Factory[Any]]] = []
        if self.settings.telnet is not None:
            telnet = _Sessions(
                _TelnetFactory(self._portal(True), self.clock), "ManholeTelnet"
            )
            self._sessions.append(telnet)
            found.append(("manhole", self.settings.telnet, telnet))
        if self.settings.ssh is not None:
            assert self.hostKey is not None
            from twisted.conch.manhole_ssh import ConchFactory

            factory = ConchFactory(self._portal(False))
            factory.protocol = _SSHTransport
            kind = self.hostKey.sshType()
            # Instance attributes: ConchFactory's are shared class dicts.
            keys: Any = {kind: self.hostKey.public()}
            factory.publicKeys = keys
            privateKeys: Any = {kind: self.hostKey}
            factory.privateKeys = privateKeys
            factory.noisy = False
            ssh = _Sessions(factory, "ManholeSSH")
            self._sessions.append(ssh)
            found.append(("manhole-ssh", self.settings.ssh, ssh))
        return found

    def startService(self) -> None:
        """
        Say where the manholes listen (warning if the SSH one can be reached
        from other machines) and the host key's fingerprint.
        """
        super().startService()
        settings = self.settings
        if settings.telnet is not None:
            _log.info(
                "manhole: telnet on {endpoint}, users from {passwd}",
                endpoint=settings.telnet,
                passwd=settings.passwd,
            )
        if settings.ssh is not None and self.hostKey is not None:
            logins = " and ".join(
                f"{what} from {path}"
                for what, path in (
                    ("keys", settings.keys),
                    ("passwords", settings.passwd),
                )
                if path is not None
            )
            _log.info(
                "manhole: SSH on {endpoint}, {logins}; host key {path} "
                "({type} {fingerprint}{created})",
                endpoint=settings.ssh,
                logins=logins,
                path=settings.hostKey,
                type=self.hostKey.sshType().decode("ascii"),
                fingerprint=fingerprint(self.hostKey),
                created=", just created" if self.createdKey else "",
            )
            where = exposedInterface(settings.ssh)
            if where is not None:
                _log.warn(
                    "manhole: the SSH manhole ({endpoint}) listens on {where}: "
                    "anyone who can reach it may try to log in, and a login runs "
                    "any code in the proxy; prefer loopback and an SSH tunnel",
                    endpoint=settings.ssh,
                    where=where,
                    event="manhole-exposed",
                )

    def stopService(self) -> None:
        """
        Close every manhole session.
        """
        super().stopService()
        for sessions in self._sessions:
            sessions.closeAll()
