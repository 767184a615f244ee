"""The administrator's listener of `oneroot serve --admin-listen`: the status page with power
buttons. Off unless asked, on localhost by default, apart from the port nodes reach.

Every request needs the token (`oneroot admin token`): as `Authorization: Bearer TOKEN`, or
the `oneroot_admin` cookie that `GET /login?token=TOKEN` sets (HttpOnly, SameSite=Strict).
A POST authenticated by the cookie must also carry `X-Oneroot-CSRF` (derived from the token,
served to the page by `GET /api/v1/admin/session`) and, when the browser sends one, an
`Origin` of this listener: another site's page can neither send that header nor read it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from oneroot.errors import InvalidValue
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.admin_token import csrf_token, same_token
from oneroot.ops.power import PowerAction, PowerResult, Recorder, power
from oneroot.serve.statusboard import StatusBoard, add_page_routes

log = logging.getLogger(__name__)

COOKIE = "oneroot_admin"
# The buttons, and the action each runs (reboot is a power cycle, as `oneroot node reboot`).
BUTTONS = {"on": PowerAction.ON, "off": PowerAction.OFF, "reboot": PowerAction.CYCLE,
           "reset": PowerAction.RESET}


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminListen:
    host: str = "127.0.0.1"
    port: int = 8081


def parse_listen(text: str) -> AdminListen:
    """`HOST:PORT`, or `PORT` alone (on 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidValue(f"--admin-listen {text!r} is not HOST:PORT",
                           hint="e.g. --admin-listen 127.0.0.1:8081")
    return AdminListen(host=host.strip("[]") or "127.0.0.1", port=int(port))


class AdminService:
    def __init__(self, *, listen: AdminListen, token: str, board: StatusBoard,
                 cluster: Callable[[], ResolvedCluster],
                 record: Recorder,
                 run_power: Callable[..., Awaitable[list[PowerResult]]] | None = None) -> None:
        """`record` stores the stages successful actions mean (`off`, `power-on`), as
        `oneroot power` does; serve's watcher of those stages pushes them to the page."""
        self.listen = listen
        self._token = token
        self._board = board
        self._cluster = cluster
        self._run_power = run_power or functools.partial(_power_in_thread, record=record)
        self.app = web.Application(client_max_size=16 * 1024,
                                   middlewares=[self._authenticate])
        add_page_routes(self.app, board)
        self.app.add_routes([
            web.get("/login", self.login),
            web.get("/api/v1/admin/session", self.session),
            web.post("/api/v1/admin/power", self.power),
        ])
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.listen.host, self.listen.port,
                          reuse_address=True).start()
        log.info("admin.listening host=%s port=%d", self.listen.host, self.listen.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _origins(self) -> set[str]:
        port = self.listen.port
        hosts = {self.listen.host, "localhost", "127.0.0.1", "[::1]"}
        return {f"http://{h}:{port}" for h in hosts}

    @web.middleware
    async def _authenticate(self, request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        if request.path == "/login":
            return await handler(request)
        bearer = request.headers.get("Authorization", "")
        by_bearer = bearer.startswith("Bearer ") and same_token(bearer[7:].strip(), self._token)
        by_cookie = same_token(request.cookies.get(COOKIE), self._token)
        if not (by_bearer or by_cookie):
            log.info("admin.refused peer=%s path=%s reason=no valid token", request.remote,
                     request.path)
            raise web.HTTPUnauthorized(
                text="a token is needed: open the URL `oneroot admin token` prints\n")
        if request.method != "GET" and not by_bearer:
            origin = request.headers.get("Origin")
            if origin is not None and origin not in self._origins():
                log.warning("admin.refused peer=%s origin=%r reason=cross-origin",
                            request.remote, origin[:200])
                raise web.HTTPForbidden(text="cross-origin request refused\n")
            if not same_token(request.headers.get("X-Oneroot-CSRF"), csrf_token(self._token)):
                log.warning("admin.refused peer=%s reason=no CSRF header", request.remote)
                raise web.HTTPForbidden(text="the X-Oneroot-CSRF header is missing or wrong\n")
        return await handler(request)

    async def login(self, request: web.Request) -> web.Response:
        if not same_token(request.query.get("token"), self._token):
            log.info("admin.login_refused peer=%s", request.remote)
            raise web.HTTPUnauthorized(text="wrong token: see `oneroot admin token`\n")
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(COOKIE, self._token, httponly=True, samesite="Strict", path="/")
        raise resp

    async def session(self, request: web.Request) -> web.Response:
        return web.json_response({"csrf": csrf_token(self._token), "actions": list(BUTTONS)},
                                 headers={"Cache-Control": "no-store"})

    async def power(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            node, button = str(body["node"]), str(body["action"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='body: {"node": NAME, "action": ACTION}\n') from None
        cluster = self._cluster()
        if node not in cluster.nodes or button not in BUTTONS:
            raise web.HTTPBadRequest(
                text=f"unknown node or action; actions: {' '.join(BUTTONS)}\n")
        action = BUTTONS[button]
        log.info("admin.power node=%s action=%s peer=%s", node, action.value, request.remote)
        (result,) = await self._run_power(cluster, node, action)
        if not result.ok:
            self._board.record_error(node=node, message=f"power {button}: {result.error}",
                                     hint=result.hint)
        return web.json_response(result.as_json(), status=200 if result.ok else 502)


async def _power_in_thread(cluster: ResolvedCluster, node: str, action: PowerAction, *,
                           record: Recorder) -> list[PowerResult]:
    return await asyncio.to_thread(power, cluster, (node,), action, record=record)
