# -*- test-case-name: tests -*-
"""
The admin site: the JSON API, the dashboard and the Prometheus metrics.
"""
