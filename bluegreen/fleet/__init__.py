# -*- test-case-name: tests.test_fleet -*-
"""
Several bluegreen instances agreeing through one Redis (C{--coordinate}).

  - L{state}: the shared state (live colour, generation, switch history) and
    how its records are written in Redis;
  - L{script}: the Lua scripts: the compare-and-set of a switch, and the
    read (creating the state the first time);
  - L{coordinator}: L{coordinator.Coordinator}, the service that reads the
    state, proposes every local switch with the compare-and-set, follows
    the others' switches, and says when Redis cannot be reached.

Every instance checks health itself and proposes its switches; the one whose
compare-and-set succeeds is recorded, the others follow it.  While Redis is
unreachable an instance keeps the last known colour and, unless
C{--coordinate-fallback local}, does not switch.
"""
