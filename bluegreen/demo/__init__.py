# -*- test-case-name: tests.test_demo,tests.test_workshop -*-
"""
What C{bluegreen demo} runs: the workshop's infrastructure on one machine
(L{bluegreen.demo.workshop}), and L{bluegreen.demo.meow}, the sample
application it deploys.
"""
