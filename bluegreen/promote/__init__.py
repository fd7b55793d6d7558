# -*- test-case-name: tests.test_promote -*-
"""
The deployment workflow around the switch: the preview of the standby,
verified promotion (smoke checks before a planned switch), automatic
promotion and the revisions each environment runs.
"""
