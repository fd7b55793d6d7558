# -*- test-case-name: tests -*-
"""
Tests for bluegreen.
"""
