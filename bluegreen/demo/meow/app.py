# -*- test-case-name: tests.test_meow -*-
"""
The sample app's resources:

  - C{GET /}: the home page (L{bluegreen.demo.meow.index});
  - C{POST /upload}: multipart form data, field C{image}: a PNG, JPEG or GIF
    (told by its first bytes) of at most L{MAX_IMAGE} bytes; 201 with
    C{{"id": n}} (303 to C{/} for a browser's form), 400 with
    C{{"error": ...}} otherwise;
  - C{GET /cat/{id}}: an uploaded image;
  - C{GET /fact/{id}}: C{{"id", "text", "votes", "score"}}, 404 if none;
  - C{POST /fact/{id}/vote}: JSON C{{"score": n}}, C{n} an integer from 1
    to 5; 201 with the fact, 400 if invalid, 404 if no such fact;
  - C{GET /health}: C{{"status": "ok", "name": ...}} once the database
    answers a trivial query (Redis is not involved).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ._web import finish, render, sendError, sendJSON
from .db import Database, Fact
from .flag import FlagReader
from .index import Index

#: The largest image accepted, in bytes.
MAX_IMAGE = 1024 * 1024

#: The largest vote body accepted, in bytes.
MAX_VOTE_BODY = 1024

#: Votes' scores.
MIN_SCORE, MAX_SCORE = 1, 5

#: Accepted images: their first bytes and media type.
IMAGE_TYPES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def imageType(data: bytes) -> str | None:
    """
    @param data: A file's bytes.
    @return: Its media type if it is a PNG, JPEG or GIF, else L{None}.
    """
    for magic, contentType in IMAGE_TYPES:
        if data.startswith(magic):
            return contentType
    return None


def _factJSON(fact: Fact) -> dict[str, object]:
    """
    A fact as JSON.
    """
    return {"id": fact.id, "text": fact.text, "votes": fact.votes, "score": fact.score}


def _parseId(segment: bytes) -> int | None:
    """
    @return: The id in a path segment, or L{None} if it is not one.
    """
    if not segment.isdigit() or len(segment) > 18:
        return None
    return int(segment)


class NotFound(Resource):
    """
    404, as JSON.
    """

    isLeaf = True

    def __init__(self, message: str = "not found") -> None:
        """
        @param message: The error.
        """
        super().__init__()
        self.message = message

    def render(self, request: Request) -> bytes:
        """
        Answer 404.
        """
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"error": self.message}).encode("utf-8") + b"\n"


class Upload(Resource):
    """
    C{POST /upload}.
    """

    isLeaf = True

    def __init__(self, db: Database) -> None:
        """
        @param db: Where images go.
        """
        super().__init__()
        self.db = db

    async def _store(self, request: Request, image: bytes, contentType: str) -> None:
        """
        Store the image and answer.
        """
        catId = await self.db.addCat(image, contentType)
        accept = request.getHeader(b"accept") or b""
        if b"text/html" in accept:
            request.setHeader(b"location", b"/")
            finish(request, 303, b"", b"text/plain")
        else:
            sendJSON(request, 201, {"id": catId, "content_type": contentType})

    def render_POST(self, request: Request) -> int:
        """
        Check the upload and store it.
        """
        contentType = request.getHeader(b"content-type") or b""
        if not contentType.lower().startswith(b"multipart/form-data"):
            sendError(request, 400, "expected multipart/form-data with a field image")
            return NOT_DONE_YET
        images = (request.args or {}).get(b"image")
        if not images or not images[0]:
            sendError(request, 400, "missing field image (a PNG, JPEG or GIF file)")
            return NOT_DONE_YET
        image = images[0]
        if len(image) > MAX_IMAGE:
            sendError(
                request,
                400,
                f"image too large: {len(image)} bytes, at most {MAX_IMAGE}",
            )
            return NOT_DONE_YET
        kind = imageType(image)
        if kind is None:
            sendError(request, 400, "not an image: only PNG, JPEG and GIF are accepted")
            return NOT_DONE_YET
        return render(request, self._store(request, image, kind))


class Numbered(Resource):
    """
    C{/cat/} and C{/fact/}: one child per id (C{/cat/{id}}, C{/fact/{id}}).

    @ivar db: The database.
    @ivar noun: What is numbered (C{"cat"}), for the 404's message.
    @ivar child: Makes the resource of one id.
    """

    def __init__(
        self, db: Database, noun: str, child: Callable[[Database, int], Resource]
    ) -> None:
        """
        @param db: The database, for the children.
        @param noun: What is numbered.
        @param child: Makes the resource of one id, given C{db} and the id.
        """
        super().__init__()
        self.db = db
        self.noun = noun
        self.child = child

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        The resource of one id, or a 404 if C{path} is not one.
        """
        number = _parseId(path)
        if number is None:
            return NotFound(f"no such {self.noun}")
        return self.child(self.db, number)


class CatImage(Resource):
    """
    One image.
    """

    isLeaf = True

    def __init__(self, db: Database, catId: int) -> None:
        """
        @param db: Where images are.
        @param catId: Its id.
        """
        super().__init__()
        self.db = db
        self.catId = catId

    async def _send(self, request: Request) -> None:
        """
        Answer with the image.
        """
        found = await self.db.cat(self.catId)
        if found is None:
            sendError(request, 404, f"no cat {self.catId}")
            return
        image, contentType = found
        finish(request, 200, image, contentType.encode("ascii"))

    def render_GET(self, request: Request) -> int:
        """
        Answer with the image.
        """
        return render(request, self._send(request))


class FactResource(Resource):
    """
    C{GET /fact/{id}}, with C{vote} below it.
    """

    def __init__(self, db: Database, factId: int) -> None:
        """
        @param db: Where facts are.
        @param factId: Its id.
        """
        super().__init__()
        self.db = db
        self.factId = factId
        self.putChild(b"vote", Vote(db, factId))

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        C{/fact/{id}/} is the fact; anything else is not found.
        """
        if path == b"":
            return self
        return NotFound()

    async def _send(self, request: Request) -> None:
        """
        Answer with the fact.
        """
        fact = await self.db.fact(self.factId)
        if fact is None:
            sendError(request, 404, f"no fact {self.factId}")
            return
        sendJSON(request, 200, _factJSON(fact))

    def render_GET(self, request: Request) -> int:
        """
        Answer with the fact.
        """
        return render(request, self._send(request))


class Vote(Resource):
    """
    C{POST /fact/{id}/vote}.
    """

    isLeaf = True

    def __init__(self, db: Database, factId: int) -> None:
        """
        @param db: Where votes go.
        @param factId: The fact voted on.
        """
        super().__init__()
        self.db = db
        self.factId = factId

    async def _vote(self, request: Request, score: int) -> None:
        """
        Record the vote and answer.
        """
        fact = await self.db.vote(self.factId, score)
        if fact is None:
            sendError(request, 404, f"no fact {self.factId}")
            return
        sendJSON(request, 201, _factJSON(fact))

    def render_POST(self, request: Request) -> int:
        """
        Check the vote and record it.
        """
        assert request.content is not None
        body = request.content.read(MAX_VOTE_BODY + 1)
        usage = (
            f'expected JSON {{"score": n}} with n an integer {MIN_SCORE}..{MAX_SCORE}'
        )
        if len(body) > MAX_VOTE_BODY:
            sendError(request, 400, "body too large; " + usage)
            return NOT_DONE_YET
        try:
            value = json.loads(body)
        except ValueError:
            sendError(request, 400, "body is not JSON; " + usage)
            return NOT_DONE_YET
        score = value.get("score") if isinstance(value, dict) else None
        if type(score) is not int or not MIN_SCORE <= score <= MAX_SCORE:
            sendError(request, 400, usage)
            return NOT_DONE_YET
        return render(request, self._vote(request, score))


class Health(Resource):
    """
    C{GET /health}: cheap; does not touch Redis.
    """

    isLeaf = True

    def __init__(self, name: str, db: Database) -> None:
        """
        @param name: The environment's name.
        @param db: The database, asked a trivial query.
        """
        super().__init__()
        self.name = name
        self.db = db

    async def _check(self, request: Request) -> None:
        """
        Answer once the database answers.
        """
        await self.db.ping()
        sendJSON(request, 200, {"status": "ok", "name": self.name})

    def render_GET(self, request: Request) -> int:
        """
        Answer.
        """
        return render(request, self._check(request))

    render_HEAD = render_GET


class Root(Resource):
    """
    The app.
    """

    def __init__(self, name: str, db: Database, flags: FlagReader) -> None:
        """
        @param name: The environment's name.
        @param db: The database.
        @param flags: Reads the environment's flags.
        """
        super().__init__()
        self.putChild(b"", Index(name, db, flags))
        self.putChild(b"upload", Upload(db))
        self.putChild(b"cat", Numbered(db, "cat", CatImage))
        self.putChild(b"fact", Numbered(db, "fact", FactResource))
        self.putChild(b"health", Health(name, db))

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        Anything unknown is not found.
        """
        return NotFound()
