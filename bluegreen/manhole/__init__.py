# -*- test-case-name: tests.test_manhole -*-
"""
Telnet and SSH manholes: a Python prompt inside the running service.

  - L{bluegreen.manhole.service}: the options, and the C{Manhole} service
    that builds the listeners' factories and closes the sessions.
  - L{bluegreen.manhole.auth}: the password and authorized keys files,
    their credential checkers, and the SSH host key.
  - L{bluegreen.manhole.namespace}: what a session sees (the live objects,
    C{status()}, C{switch()}, C{help()}, ...).
  - L{bluegreen.manhole.realm}: a logged-in user's session.
  - L{bluegreen.manhole.telnet}, L{bluegreen.manhole.ssh}: the two ways in.
  - L{bluegreen.manhole.prompt}: the Python prompt on the session's terminal.

The service that contains the manholes hands over what they show as one
L{bluegreen.manhole.namespace.LiveObjects} value; nothing here imports it.
"""
