# -*- test-case-name: tests -*-
"""
Service wiring: the twistd plugin's options and C{makeService}.
"""
