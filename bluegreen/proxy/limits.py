# -*- test-case-name: tests.test_front_limits,tests.test_front_descriptors -*-
"""
What the proxy allows its clients: L{ClientLimits}, a frozen value built
from the options (L{bluegreen.service.limitoptions}) and read by the client
channel (L{bluegreen.proxy.channel.ProxyChannel}); and how many clients fit
in the process's descriptors (L{defaultMaxClients}).

The defaults follow nginx and HAProxy where they agree, and say why where
they do not (README.rst, "Limits and timeouts").
"""

from __future__ import annotations

from attrs import frozen

#: Seconds a client has to send a whole request head (HAProxy's advised
#: C{timeout http-request}; nginx's C{client_header_timeout} is 60 s, which
#: lets a slowloris client hold a connection six times as long).
HEADER_TIMEOUT = 10.0

#: Seconds an idle keep-alive client connection is kept, and the longest
#: silence while a request body arrives: twisted.web's idle timer, kept as
#: it was (nginx's C{keepalive_timeout} is 75 s, HAProxy falls back to its
#: request timeout).
IDLE_TIMEOUT = 60.0

#: Longest request line (nginx: one of C{large_client_header_buffers}, 8k).
REQUEST_LINE_LIMIT = 8 * 1024

#: Largest header section, field lines and their CRLFs (nginx: 4 x 8k
#: buffers; Envoy: C{max_request_headers_kb} 60).
HEADER_SECTION_LIMIT = 64 * 1024

#: Most header fields (HAProxy's C{tune.http.maxhdr} is 101).
HEADER_FIELDS_LIMIT = 100

#: Largest request body: nginx's 1m refuses ordinary uploads (a photo, a
#: document), HAProxy has no limit; 100 MiB keeps ordinary uploads working
#: and still bounds what one request can make the application receive.
MAX_BODY_SIZE = 100 * 1024 * 1024

#: Seconds a rejected client's further bytes are read and dropped after its
#: response, so that its kernel does not reset the connection (dropping the
#: response) over unread data: nginx's C{lingering_timeout}.
LINGER_TIMEOUT = 5.0

#: Descriptors kept for everything but client connections, beyond the
#: upstream pools: health checks, the admin API and its clients, Redis,
#: logs, temporary files, the sync's processes and the listening sockets.
DESCRIPTOR_RESERVE = 64


@frozen
class ClientLimits:
    """
    Limits and timeouts applied to each client connection of the proxy.

    @ivar headerTimeout: Seconds allowed for a whole request head, from its
        first byte (or from the connection's start, for its first request);
        past it the client gets a 408 and the connection is closed.
    @ivar idleTimeout: Seconds an idle keep-alive connection is kept, and
        the longest silence within a request body (then 408).
    @ivar requestLineLimit: Longest request line in bytes (then 414).
    @ivar headerSectionLimit: Largest header section in bytes, counting each
        field line's CRLF (then 431).
    @ivar headerFieldsLimit: Most header field lines (then 431).
    @ivar maxBodySize: Largest request body in bytes, or L{None} for no
        limit (then 413, before any upstream is contacted when the length
        is declared).
    @ivar maxClients: Most client connections open at once (past it the
        listening port stops accepting until one closes), or L{None} for
        the default derived at start from the descriptor limit
        (L{defaultMaxClients}).
    @ivar lingerTimeout: Seconds a rejected client's further bytes are read
        and dropped before its connection is closed.
    """

    headerTimeout: float = HEADER_TIMEOUT
    idleTimeout: float = IDLE_TIMEOUT
    requestLineLimit: int = REQUEST_LINE_LIMIT
    headerSectionLimit: int = HEADER_SECTION_LIMIT
    headerFieldsLimit: int = HEADER_FIELDS_LIMIT
    maxBodySize: int | None = MAX_BODY_SIZE
    maxClients: int | None = None
    lingerTimeout: float = LINGER_TIMEOUT


def defaultMaxClients(descriptors: int, maxConnections: int) -> int:
    """
    The most client connections that fit in C{descriptors} open files.

    Each environment's pool may hold C{maxConnections} upstream connections
    (two environments), and L{DESCRIPTOR_RESERVE} descriptors are kept for
    the rest; a client connection takes one descriptor.

    @param descriptors: The soft C{RLIMIT_NOFILE} (after raising it).
    @param maxConnections: C{--max-connections}.
    @return: C{descriptors - 2 * maxConnections - DESCRIPTOR_RESERVE}, at
        least 1.
    """
    return max(1, descriptors - 2 * maxConnections - DESCRIPTOR_RESERVE)
