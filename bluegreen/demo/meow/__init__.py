# -*- test-case-name: tests.test_meow -*-
"""
meow: the sample application of the blue-green workshop, in the spirit of
meow.io: cat facts to vote on and cat pictures to upload, a feature flag
(C{RECENT}) read from the environment's Redis, SQLite through
L{twisted.enterprise.adbapi}.

Run it with C{python -m bluegreen.demo.meow --help}.  It imports nothing but
Twisted and the standard library, and only relative imports of its own
modules, so a checkout of this package runs as it is.
"""
