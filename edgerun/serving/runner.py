"""The foreground runner: uvicorn around create_app, graceful stop on SIGTERM/SIGINT with exit status 0."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from types import FrameType
from typing import Any

from .. import sdnotify
from .config import LifecycleHooks, ServeConfig

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _after_graceful_stop(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal once it has shut down; receiving it here keeps exit 0."""


def systemd_hooks(config: ServeConfig, watchdog: sdnotify.Watchdog) -> LifecycleHooks:
    """systemd's notify protocol at the life-cycle points (each a no-op without $NOTIFY_SOCKET):
    READY=1 and the watchdog pings once start-up is complete, a ping per tick only while
    inferences finish (or none is running), STOPPING=1 when shutdown begins."""
    names = ", ".join(m.name for m in config.models)

    def ready() -> None:
        sdnotify.ready(f"serving {names}")
        watchdog.start()

    def stopping() -> None:
        sdnotify.stopping()

    def failed(reason: str) -> None:
        sdnotify.status(f"start-up failed: {reason}")

    return LifecycleHooks(on_ready=ready, on_stopping=stopping, on_failed=failed, working=watchdog.working)


def uvicorn_config(app: Any, config: ServeConfig) -> Any:
    """The uvicorn.Config ``app`` (made by create_app) is served with: address, graceful stop
    (fractions of a second too), the connection budgets of ``config.limits`` and the infer fast lane."""
    import uvicorn

    from .connections import uvicorn_budgets
    from .fastlane import InferLane

    lane = InferLane(app.state.service) if config.server.infer_fast_lane else None

    return uvicorn.Config(
        app, host=config.host, port=config.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=config.graceful_timeout_s,  # type: ignore[arg-type]  # a float works
        server_header=False, **uvicorn_budgets(config.limits, lane))


def serve(config: ServeConfig, hooks: LifecycleHooks | None = None) -> int:
    """Serve until SIGTERM/SIGINT. 0 after a graceful stop, 1 when start-up failed.

    Life-cycle points, for systemd's sd_notify or similar, are ``hooks``: on_ready (every start-up
    model loaded and warmed up), on_stopping (a stop signal arrived; in-flight requests finish
    next), on_failed (a start-up model could not be loaded; the server then stops); ``working``
    wraps each model execution. on_ready waits for the listening socket too.
    """
    import uvicorn

    from .app import create_app

    hooks = hooks or LifecycleHooks()
    failures: list[str] = []

    def failed(reason: str) -> None:
        failures.append(reason)
        if hooks.on_failed:
            hooks.on_failed(reason)
        server.should_exit = True

    def ready() -> None:  # models are warm; tell the hook once uvicorn has bound its socket too
        if hooks.on_ready is None or server.should_exit:
            return
        if server.started:
            hooks.on_ready()
        else:
            asyncio.get_running_loop().call_later(0.01, ready)

    app = create_app(config, dataclasses.replace(hooks, on_ready=ready, on_failed=failed))
    service = app.state.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            service.begin_shutdown()  # not ready from now on; calls hooks.on_stopping
            super().handle_exit(sig, frame)

    server = Server(uvicorn_config(app, config))
    previous = {sig: signal.signal(sig, _after_graceful_stop) for sig in STOP_SIGNALS}
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind the port
        log.error("server could not start (exit status %s)", exc.code)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failures or not server.started else 0
