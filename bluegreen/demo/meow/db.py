# -*- test-case-name: tests.test_meow -*-
"""
The sample app's SQLite database, used through L{twisted.enterprise.adbapi}.

Every table has an integer primary key and a C{created_at} column (UTC,
ISO 8601 with milliseconds), so C{bluegreen migrate} can tell which rows one
environment's database lacks::

    facts(id, text, created_at)
    votes(id, fact_id -> facts, score, created_at)
    cats(id, image BLOB, content_type, created_at)

A new database is seeded with the facts of C{facts.txt} and the images of
C{images/}, with fixed ids and creation times, so the seeded rows are the
same in every environment's database.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from twisted.enterprise.adbapi import ConnectionPool, Transaction

HERE = Path(__file__).resolve().parent
FACTS_FILE = HERE / "facts.txt"
IMAGES_DIR = HERE / "images"

#: Milliseconds the connection waits on another writer's lock.
BUSY_TIMEOUT_MS = 5000

#: The seeded rows' creation times: fixed, so every database has the same.
SEED_TIME = "2024-01-01T00:00:{:02d}.000Z"

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fact_id INTEGER NOT NULL REFERENCES facts(id),
    score INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
CREATE INDEX IF NOT EXISTS votes_fact_id ON votes(fact_id);
CREATE TABLE IF NOT EXISTS cats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image BLOB NOT NULL,
    content_type TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
CREATE INDEX IF NOT EXISTS cats_created_at ON cats(created_at);
"""

T = TypeVar("T")


@dataclass(frozen=True)
class Fact:
    """
    A cat fact and its votes.

    @ivar id: Its id.
    @ivar text: The fact.
    @ivar votes: How many votes it has.
    @ivar score: The sum of their scores.
    """

    id: int
    text: str
    votes: int
    score: int


@dataclass(frozen=True)
class Cat:
    """
    An uploaded image, without its bytes.

    @ivar id: Its id.
    @ivar contentType: Its media type.
    @ivar createdAt: When it was uploaded.
    """

    id: int
    contentType: str
    createdAt: str


def seedFacts() -> list[str]:
    """
    @return: The facts of C{facts.txt}.
    """
    lines = FACTS_FILE.read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and line[0] != "#"]


def seedImages() -> list[bytes]:
    """
    @return: The PNG images of C{images/}, by name.
    """
    return [path.read_bytes() for path in sorted(IMAGES_DIR.glob("*.png"))]


def _openConnection(connection: sqlite3.Connection) -> None:
    """
    Set up each new connection: WAL journal, busy timeout, foreign keys.
    """
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA foreign_keys = ON")


def _create(cursor: Transaction) -> None:
    """
    Create the tables if missing and seed empty ones.
    """
    for statement in SCHEMA.split(";"):
        if statement.strip():
            cursor.execute(statement)
    cursor.execute("SELECT COUNT(*) FROM facts")
    if cursor.fetchone()[0] == 0:
        for number, text in enumerate(seedFacts(), 1):
            cursor.execute(
                "INSERT INTO facts (id, text, created_at) VALUES (?, ?, ?)",
                (number, text, SEED_TIME.format(number % 60)),
            )
    cursor.execute("SELECT COUNT(*) FROM cats")
    if cursor.fetchone()[0] == 0:
        for number, image in enumerate(seedImages(), 1):
            cursor.execute(
                "INSERT INTO cats (id, image, content_type, created_at)"
                " VALUES (?, ?, 'image/png', ?)",
                (number, image, SEED_TIME.format(number)),
            )


class Database:
    """
    The app's database: one L{ConnectionPool} of a single connection (SQLite
    has one writer at a time).

    @ivar pool: The pool.
    """

    def __init__(self, path: str) -> None:
        """
        @param path: The database file, created (with its directory) if
            missing by L{open}.
        """
        self.path = path
        self.pool = ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
            cp_min=1,
            cp_max=1,
            cp_openfun=_openConnection,
        )

    def _run(self, f: Callable[..., T], *args: Any) -> Any:
        """
        Run C{f(cursor, *args)} in a transaction.
        """
        return self.pool.runInteraction(f, *args)

    async def open(self) -> None:
        """
        Create the schema and seed a new database.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        await self._run(_create)

    def close(self) -> None:
        """
        Close the pool.
        """
        self.pool.close()

    async def ping(self) -> None:
        """
        A trivial query: the database answers.
        """
        await self.pool.runQuery("SELECT 1")

    async def bestFacts(self, limit: int = 10) -> list[Fact]:
        """
        @param limit: How many.
        @return: The facts with the highest total score, then the most
            votes, then the oldest.
        """
        rows = await self.pool.runQuery(
            "SELECT f.id, f.text, COUNT(v.id), COALESCE(SUM(v.score), 0)"
            " FROM facts f LEFT JOIN votes v ON v.fact_id = f.id"
            " GROUP BY f.id ORDER BY 4 DESC, 3 DESC, f.id LIMIT ?",
            (limit,),
        )
        return [Fact(*row) for row in rows]

    async def fact(self, factId: int) -> Fact | None:
        """
        @param factId: The fact's id.
        @return: The fact, or L{None} if there is none with that id.
        """
        rows = await self.pool.runQuery(
            "SELECT f.id, f.text, COUNT(v.id), COALESCE(SUM(v.score), 0)"
            " FROM facts f LEFT JOIN votes v ON v.fact_id = f.id"
            " WHERE f.id = ? GROUP BY f.id",
            (factId,),
        )
        return Fact(*rows[0]) if rows else None

    async def vote(self, factId: int, score: int) -> Fact | None:
        """
        Record a vote.

        @param factId: The fact's id.
        @param score: The score.
        @return: The fact with the vote counted, or L{None} (and no vote) if
            there is no fact with that id.
        """

        def insert(cursor: Transaction) -> bool:
            cursor.execute("SELECT 1 FROM facts WHERE id = ?", (factId,))
            if cursor.fetchone() is None:
                return False
            cursor.execute(
                "INSERT INTO votes (fact_id, score) VALUES (?, ?)", (factId, score)
            )
            return True

        if not await self._run(insert):
            return None
        return await self.fact(factId)

    async def addCat(self, image: bytes, contentType: str) -> int:
        """
        Store an uploaded image.

        @param image: Its bytes.
        @param contentType: Its media type.
        @return: Its id.
        """

        def insert(cursor: Transaction) -> int:
            cursor.execute(
                "INSERT INTO cats (image, content_type) VALUES (?, ?)",
                (sqlite3.Binary(image), contentType),
            )
            rowid: int = cursor.lastrowid
            return rowid

        result: int = await self._run(insert)
        return result

    async def recentCats(self, limit: int = 5) -> list[Cat]:
        """
        @param limit: How many.
        @return: The newest images (without their bytes), newest first.
        """
        rows = await self.pool.runQuery(
            "SELECT id, content_type, created_at FROM cats"
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [Cat(*row) for row in rows]

    async def cat(self, catId: int) -> tuple[bytes, str] | None:
        """
        @param catId: The image's id.
        @return: Its bytes and media type, or L{None}.
        """
        rows = await self.pool.runQuery(
            "SELECT image, content_type FROM cats WHERE id = ?", (catId,)
        )
        if not rows:
            return None
        return bytes(rows[0][0]), rows[0][1]
