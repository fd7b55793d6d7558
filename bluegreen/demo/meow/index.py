# -*- test-case-name: tests.test_meow -*-
"""
The home page, C{GET /}: which environment answered, the recent uploads
(when the environment's Redis has C{RECENT} = C{ON}) and the best cat facts
by votes.

The page answers with L{STATUS}.  The workshop's "bad commit" is the
one-line edit C{STATUS = 500}: the page still renders, but every health
check of C{/} fails.
"""

from __future__ import annotations

from html import escape

from twisted.web.resource import Resource
from twisted.web.server import Request

from ._web import finish, render
from .db import Cat, Database, Fact
from .flag import FlagReader

#: The home page's HTTP status (the workshop's bad commit makes it 500).
STATUS = 200

#: The flag that shows the recent uploads.
RECENT = "RECENT"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>meow.io ({name})</title>
<style>
body {{ font-family: sans-serif; max-width: 48em; margin: 2em auto; }}
.env {{ padding: .3em .8em; color: white; background: {colour}; }}
.cats img {{ width: 96px; height: 96px; image-rendering: pixelated; }}
</style>
</head>
<body>
<h1>meow.io <span class="env" id="environment">{name}</span></h1>
{recent}
<section id="facts">
<h2>Best cat facts</h2>
<ol>
{facts}
</ol>
</section>
<section id="upload">
<h2>Upload a cat</h2>
<form action="/upload" method="post" enctype="multipart/form-data">
<input type="file" name="image" accept="image/png,image/jpeg,image/gif">
<button type="submit">Upload</button>
</form>
</section>
<script>
document.querySelectorAll("button.vote").forEach(function (button) {{
  button.addEventListener("click", function () {{
    fetch("/fact/" + button.dataset.fact + "/vote", {{
      method: "POST",
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{score: Number(button.dataset.score)}})
    }}).then(function () {{ location.reload(); }});
  }});
}});
</script>
</body>
</html>
"""

_RECENT = """<section id="recent">
<h2>Recent uploads</h2>
<div class="cats">
{images}
</div>
</section>"""


def _colour(name: str) -> str:
    """
    The environment badge's colour.
    """
    lowered = name.lower()
    if "green" in lowered:
        return "#2e7d32"
    if "blue" in lowered:
        return "#1565c0"
    return "#555"


def renderPage(name: str, recent: list[Cat] | None, facts: list[Fact]) -> bytes:
    """
    The home page's HTML.

    @param name: The environment's name.
    @param recent: The recent uploads, or L{None} if they are not shown.
    @param facts: The best facts.
    @return: The page.
    """
    recentHTML = ""
    if recent is not None:
        images = "\n".join(
            f'<img src="/cat/{cat.id}" alt="cat {cat.id}" data-cat="{cat.id}">'
            for cat in recent
        )
        recentHTML = _RECENT.format(images=images)
    factsHTML = "\n".join(
        f'<li id="fact-{fact.id}">{escape(fact.text)}'
        f" <small>({fact.score} points, {fact.votes} votes)</small>"
        + "".join(
            f' <button class="vote" data-fact="{fact.id}" data-score="{n}">{n}</button>'
            for n in (1, 5)
        )
        + "</li>"
        for fact in facts
    )
    return _PAGE.format(
        name=escape(name),
        colour=_colour(name),
        recent=recentHTML,
        facts=factsHTML,
    ).encode("utf-8")


class Index(Resource):
    """
    C{GET /}.
    """

    isLeaf = True

    def __init__(self, name: str, db: Database, flags: FlagReader) -> None:
        """
        @param name: The environment's name, shown on the page.
        @param db: The database.
        @param flags: Reads C{RECENT}.
        """
        super().__init__()
        self.name = name
        self.db = db
        self.flags = flags

    async def _page(self, request: Request) -> None:
        """
        Build the page and answer with L{STATUS}.
        """
        recent = None
        if await self.flags.isOn(RECENT):
            recent = await self.db.recentCats(5)
        facts = await self.db.bestFacts(10)
        body = renderPage(self.name, recent, facts)
        finish(request, STATUS, body, b"text/html; charset=utf-8")

    def render_GET(self, request: Request) -> int:
        """
        Answer with the page.
        """
        return render(request, self._page(request))

    render_HEAD = render_GET
