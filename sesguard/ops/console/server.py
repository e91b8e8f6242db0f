"""The console's web server: loopback only, and a guard in front of every request.

The console acts with the operator's own AWS credentials (the CLI's, from the SDK's
credential chain), so it must act only for the operator's own pages:

- It listens on 127.0.0.1 and nowhere else: there is no option to bind another address,
  so nothing reaches it from the network.
- Host must be 127.0.0.1:PORT or localhost:PORT. A DNS-rebinding page (evil.example
  re-pointed at 127.0.0.1) is same-origin with itself, not with us: its requests carry
  Host evil.example:PORT and are refused, so it can neither read nor change anything.
- Every API request (reads too) needs the per-process random token in the
  X-Sesguard-Token header. The token is written into the pages this server serves (a
  meta tag); another site's page cannot read them (the browser's same-origin policy), so
  it cannot know the token, and a cross-origin request cannot set the header without a
  CORS preflight, which this server never grants.
- A state-changing request must also carry Origin http://127.0.0.1:PORT (or localhost),
  a JSON body, and, where the browser sends it, Sec-Fetch-Site same-origin. Only GET and
  HEAD change nothing; anything else (OPTIONS preflights included) goes through all checks.
- Every response forbids framing and inline script (a strict Content-Security-Policy with
  Trusted Types: no HTML is ever built from strings), is never cached, and is not
  readable cross-origin (Cross-Origin-Resource-Policy same-origin).
- No mail content exists here: the API serves counters, limits, statuses and reasons.
  The pages put partner-supplied text (ids, reasons, contacts) into the DOM as text only.

Not covered: other users of the same machine can connect to 127.0.0.1 too and load the
page (and so the token), as with any loopback service without a login: run the console on
a machine whose other local users you trust with your AWS credentials.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from aiohttp import web

from sesguard.aws.clients import Clients
from sesguard.aws.store import PartnerStore
from sesguard.errors import Failed, Refused
from sesguard.logging import get_logger
from sesguard.ops import operations
from sesguard.ops.console import api
from sesguard.settings import Settings

log = get_logger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_HEADER = "X-Sesguard-Token"  # noqa: S105 - a header name, not a secret
HERE = Path(__file__).parent
STATIC = HERE / "static"
PAGES = HERE / "pages"
TOKEN_MARK = "{{TOKEN}}"  # noqa: S105 - where the pages get the token
MAX_BODY = 64 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        ]
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class Guard:
    """The checks in front of every request (see the module docstring)."""

    token: str
    port: int
    refused: int = 0  # how many requests it refused (tests read it)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset({f"{LOOPBACK}:{self.port}", f"localhost:{self.port}"})

    def refusal(self, request: web.Request) -> str | None:
        """Why this request is refused, or None to let it through."""
        host = request.headers.get("Host")
        if host not in self.hosts:
            return f"Host {host!r} is not this console's address"
        changes = request.method not in SAFE_METHODS
        is_api = request.path.startswith("/api/")
        if not (changes or is_api):
            return None  # a page or an asset: no state, and no data without the API
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            return f"not a same-origin request (Sec-Fetch-Site: {site})"
        if changes:
            origin = request.headers.get("Origin")
            if origin not in {f"http://{h}" for h in self.hosts}:
                return f"Origin {origin!r} is not this console"
            if request.content_type != "application/json":
                return "a change must be sent as application/json"
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return f"missing or wrong {TOKEN_HEADER}"
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: api.Handler) -> web.StreamResponse:
        reason = self.refusal(request)
        if reason is None:
            return await handler(request)
        self.refused += 1
        log.warning("console_refused", method=request.method, path=request.path, reason=reason)
        return api.error(403, f"refused: {reason}")


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


@dataclass
class Pages:
    """The two HTML pages, with this process's token written in (nothing else is)."""

    token: str
    html: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("partners.html", "partner.html"):
            text = (PAGES / name).read_text(encoding="utf-8")
            assert text.count(TOKEN_MARK) == 1, name
            self.html[name] = text.replace(TOKEN_MARK, self.token).encode()

    def page(self, name: str) -> web.Response:
        return web.Response(body=self.html[name], content_type="text/html", charset="utf-8")

    async def partners(self, _request: web.Request) -> web.StreamResponse:
        return self.page("partners.html")

    async def partner(self, request: web.Request) -> web.StreamResponse:
        try:
            operations.check_id(request.match_info["partner_id"], reserved_ok=True)
        except Refused:
            raise web.HTTPNotFound(text="no such page: not a partner id") from None
        return self.page("partner.html")


async def _no_icon(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)  # browsers ask for one; a 404 would be logged as an error


def make_app(clients: Clients, settings: Settings, guard: Guard) -> web.Application:
    app = web.Application(middlewares=[guard.middleware], client_max_size=MAX_BODY)
    app[api.CLIENTS] = clients
    app[api.SETTINGS] = settings
    app.on_response_prepare.append(_security_headers)
    pages = Pages(guard.token)
    app.router.add_get("/", pages.partners)
    app.router.add_get("/partners/{partner_id}", pages.partner)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    api.add_routes(app)
    return app


def listen(port: int) -> socket.socket:
    """A listening socket on the loopback address (the only address the console uses)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Console:
    """A running console: its address, its guard, and how to stop it."""

    url: str
    guard: Guard
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(clients: Clients, settings: Settings, port: int = DEFAULT_PORT) -> Console:
    """Serve the console on 127.0.0.1:`port` (0: any free port) with a fresh token."""
    sock = listen(port)
    port = int(sock.getsockname()[1])
    guard = Guard(secrets.token_urlsafe(32), port)
    runner = web.AppRunner(
        make_app(clients, settings, guard), access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return Console(f"http://{LOOPBACK}:{port}/", guard, runner)


async def serve(
    clients: Clients, settings: Settings, port: int = DEFAULT_PORT, out: TextIO = sys.stdout
) -> int:
    """`sesguard console`: serve until Ctrl-C or SIGTERM; exit code 0."""
    # The table must be there (else one line: run bootstrap), before anyone opens a page.
    await PartnerStore.from_settings(clients.dynamodb, settings).list_partner_ids()
    try:
        console = await start(clients, settings, port)
    except OSError as exc:
        raise Failed(
            f"cannot listen on {LOOPBACK}:{port}: {exc.strerror} (choose another --port)"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"sesguard console: {console.url}\n"
        "  open it in a browser on this machine; it acts with this shell's AWS credentials."
        "\n  Ctrl-C to stop.",
        file=out,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await console.close()
    return 0
