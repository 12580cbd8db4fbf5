"""The emulator as one ASGI app: the gate middleware, task and files routes, JSON errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse

from .answers import error_for
from .callbacks import Callbacks
from .config import EmulatorConfig
from .context import Emulator
from .files import FileRoutes
from .gate import Gate
from .state import EmulatorState
from .tasks import TaskRoutes

_REASONS = {404: "No route matches {method} {path}", 405: "{method} is not allowed on {path}"}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Unknown routes (404) and wrong methods (405) answer in the path's API envelope."""
    template = _REASONS.get(exc.status_code, "{detail}")
    message = template.format(method=request.method, path=request.url.path, detail=exc.detail)
    status = exc.status_code if exc.status_code in (404, 405) else 400
    return error_for(request.url.path, status, message, **(exc.headers or {}))


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    return error_for(request.url.path, 500, f"Internal server error ({type(exc).__name__})")


def create_app(config: EmulatorConfig) -> Starlette:
    """The emulator as an ASGI app; its state opens and closes with the app's lifespan."""
    emu = Emulator(config)
    callbacks = Callbacks(emu)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        emu.state = EmulatorState(config.state_dir, config.credits)
        await callbacks.start()
        try:
            yield
        finally:
            await callbacks.stop()
            emu.state.close()

    app = Starlette(
        routes=TaskRoutes(emu, callbacks.wake).routes() + FileRoutes(emu).routes(),
        middleware=[Middleware(Gate, emulator=emu)],
        exception_handlers={HTTPException: _http_error, Exception: _crash},
        lifespan=lifespan,
    )
    app.state.emulator = emu
    return app
