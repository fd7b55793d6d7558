# -*- test-case-name: tests -*-
"""
The reverse proxy: the resource that forwards each request to the live
environment, its upstream HTTP/1.1 protocol, the connection pools and the
access log.
"""
