# -*- test-case-name: tests -*-
"""
Telnet and SSH manholes: a Python prompt inside the running service.
"""
