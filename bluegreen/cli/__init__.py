# -*- test-case-name: tests -*-
"""
The C{bluegreen} command line: a client of the admin API.
"""
