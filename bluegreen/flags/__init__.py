# -*- test-case-name: tests -*-
"""
Feature flags kept in each environment's Redis: the store, its Redis link, the
admin API endpoints and the C{bluegreen flag} commands.
"""
