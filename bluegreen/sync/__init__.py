# -*- test-case-name: tests -*-
"""
Database sync between the environments' SQLite files: the process runner, the
copy and migrate strategies, the sync service, its admin API endpoints and the
C{bluegreen sync} command.
"""
