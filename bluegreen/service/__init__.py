# -*- test-case-name: tests.test_options,tests.test_tap,tests.test_logging -*-
"""
Service wiring: C{twistd bluegreen}'s options (L{options} -> L{config}),
logging (L{logs}), listening (L{listener}) and the service tree
(L{tap}: C{makeService}, C{ProxyService}).
"""
