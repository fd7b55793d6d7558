# -*- test-case-name: tests.test_manhole,tests.test_manhole_sessions -*-
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
C{reactor}, C{pprint} (and C{flags}, C{sync} when they are on), and the
helpers: C{status()} (the live environment and health in short),
C{switch(to, force=False)} (a switch recorded as the logged-in user's:
C{"manual switch via manhole by alice"}), C{setFlag()}/C{unsetFlag()} with
feature flags, and C{help()}, which lists them all.  More objects are added
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

The package: L{bluegreen.manhole.auth} (the files, the credential checkers,
the host key), L{bluegreen.manhole.namespace} (what a session sees),
L{bluegreen.manhole.prompt} (the Python prompt), L{bluegreen.manhole.telnet}
and L{bluegreen.manhole.ssh} (the two ways in), L{bluegreen.manhole.realm}
(a login's session), and this module (the options and the service).
C{twisted.conch.manhole} (and the SSH factory) import the global reactor, so
they are imported only when a manhole is built, never when a module of this
package is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.conch.ssh.keys import Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet.interfaces import (
    IProtocolFactory,
    IReactorThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python import usage

from bluegreen.exposure import exposedInterface, listeningOn
from bluegreen.manhole.auth import (
    AuthorizedKeysChecker,
    ManholeError,
    PasswordFileChecker,
    defaultHostKeyPath,
    fingerprint,
    loadHostKey,
    readAuthorizedKeys,
    readPasswords,
)
from bluegreen.manhole.namespace import LiveObjects, Namespace
from bluegreen.manhole.realm import ManholeRealm
from bluegreen.manhole.ssh import sshFactory
from bluegreen.manhole.telnet import TelnetFactory

_log = Logger(namespace="bluegreen.manhole")

#: Endpoints to suggest in messages.
TELNET_EXAMPLES = "tcp:6023:interface=127.0.0.1, unix:/run/bluegreen/manhole.sock"
SSH_EXAMPLES = "tcp:6022:interface=127.0.0.1, tcp:6022"


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
    listening = listeningOn(description)
    if listening is None:
        return "is neither loopback TCP nor a UNIX socket"
    if listening.path is not None:
        return None
    where = exposedInterface(description)
    return None if where is None else f"listens on {where}"


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


class _Sessions(WrappingFactory):
    """
    Keeps track of a listener's connections, to close them on stop.

    @ivar prefix: What the listener's log lines start with.
    """

    noisy = False

    def __init__(self, factory: IProtocolFactory, prefix: str) -> None:
        """
        @param factory: Builds the connections.
        @param prefix: What the listener's log lines start with.
        """
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
            if protocol.transport is not None:
                protocol.transport.loseConnection()


@define(slots=False, eq=False)
class Manhole(Service):
    """
    The manholes of one bluegreen service: the namespace, the listeners'
    factories, and the sessions (closed when the service stops).

    It is a child of the bluegreen service; the listeners are its siblings
    (see L{bluegreen.service.tap.makeService}).

    @ivar settings: The checked options.
    @ivar objects: The live objects the sessions show.
    @ivar clock: The reactor (timers, and the sessions run on it).
    @ivar threads: Checks bcrypt passwords in its thread pool (L{None}:
        inline).
    @ivar hostKey: The SSH host key (L{None} without C{--manhole-ssh}).
    @ivar createdKey: Whether the host key was created at this start.
    @ivar namespace: Makes each session's namespace.
    """

    settings: ManholeSettings
    objects: LiveObjects
    clock: IReactorTime
    threads: IReactorThreads | None = None
    hostKey: Key | None = None
    createdKey: bool = False
    namespace: Namespace = field(init=False)
    _sessions: list[_Sessions] = field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        """
        Make the namespace.
        """
        self.namespace = Namespace(self.objects, self.clock)

    @classmethod
    def create(
        cls, settings: ManholeSettings, objects: LiveObjects, reactor: IReactorTime
    ) -> Manhole:
        """
        Make the manhole, loading (or creating) the SSH host key.

        @param settings: The checked options.
        @param objects: The live objects the sessions show.
        @param reactor: The reactor; its thread pool, if it has one, checks
            bcrypt passwords.
        @return: The manhole.
        @raise ManholeError: If the host key cannot be used.
        """
        hostKey, created = None, False
        if settings.ssh is not None:
            hostKey, created = loadHostKey(settings.hostKey)
        threads: IReactorThreads | None = IReactorThreads(reactor, None)
        return cls(settings, objects, reactor, threads, hostKey, created)

    def add(self, name: str, value: object, description: str) -> None:
        """
        Put C{value} in every new session's namespace as C{name} (see
        L{Namespace.add}, which checks the name).
        """
        self.namespace.add(name, value, description)

    def namespaceFor(self, who: str) -> dict[str, Any]:
        """
        A new session's namespace (see L{Namespace.namespaceFor}).

        @param who: The logged-in user.
        @return: The names.
        """
        return self.namespace.namespaceFor(who)

    def _portal(self, telnet: bool) -> Portal:
        """
        @param telnet: For the telnet manhole (passwords only).
        @return: The portal that logs users in to a manhole.
        """
        checkers: list[ICredentialsChecker] = []
        if self.settings.keys is not None and not telnet:
            checkers.append(AuthorizedKeysChecker(self.settings.keys))
        if self.settings.passwd is not None:
            checkers.append(PasswordFileChecker(self.settings.passwd, self.threads))
        return Portal(ManholeRealm(self.namespace), checkers)

    def listeners(self) -> list[tuple[str, str, IProtocolFactory]]:
        """
        The factories to listen with, one per manhole that is on.

        @return: C{(option, endpoint description, factory)} tuples, the
            option being C{"manhole"} or C{"manhole-ssh"}.
        """
        found: list[tuple[str, str, IProtocolFactory]] = []
        if self.settings.telnet is not None:
            telnet = _Sessions(
                TelnetFactory(self._portal(True), self.clock), "ManholeTelnet"
            )
            self._sessions.append(telnet)
            found.append(("manhole", self.settings.telnet, telnet))
        if self.settings.ssh is not None:
            assert self.hostKey is not None
            ssh = _Sessions(sshFactory(self._portal(False), self.hostKey), "ManholeSSH")
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
