# -*- test-case-name: tests.test_fleet -*-
"""
The Lua scripts run in Redis: each is one atomic step, so two instances
can never both win a switch.

L{SWITCH}: the compare-and-set.  C{KEYS}: the state hash and the history
list; C{ARGV}: the generation the proposer knows, the colour it switches
to, the record (JSON, already stamped with the next generation), the
channel and the history limit.  It answers C{{1, generation, live}} when
the switch is made (colour set, generation incremented, record appended,
announcement published), else C{{0, generation, live}}: the state as it is
(another instance switched first, or the colour is already live).

L{READ}: the state and the history; C{ARGV[1]} is the colour to record as
live when there is no state yet (the first instance's C{--active}).
Answers C{{live, generation, {records...}}}.

L{RELEASE}: delete the sync claim C{KEYS[1]} if C{ARGV[1]} still holds it.
"""

from __future__ import annotations

SWITCH = """
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
local live = redis.call('HGET', KEYS[1], 'live') or ''
if generation ~= tonumber(ARGV[1]) or live == ARGV[2] then
  return {0, generation, live}
end
generation = generation + 1
redis.call('HSET', KEYS[1], 'live', ARGV[2], 'generation', generation)
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {1, generation, ARGV[2]}
"""

READ = """
if redis.call('HSETNX', KEYS[1], 'live', ARGV[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'generation', 0)
end
return {
  redis.call('HGET', KEYS[1], 'live'),
  redis.call('HGET', KEYS[1], 'generation') or '0',
  redis.call('LRANGE', KEYS[2], 0, -1),
}
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
