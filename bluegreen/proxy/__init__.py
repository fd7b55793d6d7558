# -*- test-case-name: tests.test_proxy_integration -*-
"""
The reverse proxy.

  - L{bluegreen.proxy.resource}: the site and the resource that forwards each
    request to the live environment;
  - L{bluegreen.proxy.request}: the client's request, forwarded as soon as its
    headers are in, and its streamed body;
  - L{bluegreen.proxy.exchange}: one request's trip to an environment and
    back (timeouts, retries, backpressure, the access log line);
  - L{bluegreen.proxy.headers}: hop-by-hop headers, dates, client addresses;
  - L{bluegreen.proxy.failures}: upstream failures, as statuses and kinds;
  - L{bluegreen.proxy.interfaces}: what the proxy reports to (metrics, the
    health monitor);
  - L{bluegreen.proxy.pool}: persistent connections per environment;
  - L{bluegreen.proxy.upstream}: the lean HTTP/1.1 upstream protocol;
  - L{bluegreen.proxy.accesslog}: one log line per request;
  - L{bluegreen.proxy.channel}: the client connection, which a tunnel can
    take over;
  - L{bluegreen.proxy.upgrade}: which requests upgrade, and what a tunnel
    needs;
  - L{bluegreen.proxy.tunnel}: an upgrade (WebSocket) on a connection of its
    own, then bytes both ways;
  - L{bluegreen.proxy.tunnels}: the open tunnels, drained after a switch.
"""
