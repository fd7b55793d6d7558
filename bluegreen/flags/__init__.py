# -*- test-case-name: tests.test_flags -*-
"""
Feature flags kept in each environment's Redis.

  - L{model}: names, values, changes, and what is kept in Redis;
  - L{target}: where a Redis is (its URL), and why it cannot be reached;
  - L{link}: the connection to one Redis (Twisted's C{ClientService});
  - L{changes}: the change script, history entries, keyspace notifications;
  - L{cache}: an environment's flags as last known;
  - L{store}: L{store.FlagStore}, one environment's flags in its Redis;
  - L{service}: L{service.FlagService}, the stores of every environment;
  - L{api}: the C{/api/flags} endpoints of the admin API;
  - L{cli} and L{format}: the C{bluegreen flag} commands and their output.

When Redis is down, reads answer from the cache (flags never seen are off)
and say they are stale; writes fail at once ("cannot reach Redis for blue at
redis://127.0.0.1:6380/0: connection refused"); the link reconnects by
itself with a growing delay (0.5 s, doubling, at most 5 s), and the store
logs one warning per outage and one line when Redis is back.  The proxy
never waits on Redis.
"""
