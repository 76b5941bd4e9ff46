"""The service's state: served models by name (load, unload, index, readiness) and life-cycle hooks."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from ..backends.registry import Registry
from ..errors import ModelNotFoundError
from ..hal import HostFS, Platform, detect
from ..repository import ModelRepository
from .config import LifecycleHooks, ServeConfig
from .errors import ModelNotReadyError
from .execution import VERSION, ModelRunner, load_runner
from .metrics import ServingMetrics

log = logging.getLogger(__name__)

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"


def check_models(config: ServeConfig) -> None:
    """Find every start-up model's package (manifests only, no runtime): a typo fails before binding."""
    repository = ModelRepository.from_settings(config.settings)
    for model in config.models:
        repository.get(model.source)


@dataclass
class Entry:
    """What the service knows about one model it serves or served."""

    name: str
    state: str
    reason: str = ""
    runner: ModelRunner | None = None


class Service:
    """Owns the loaded models. Requests name models; names resolve only to repository packages
    or to models the operator configured, never to a path from the request."""

    def __init__(self, config: ServeConfig, hooks: LifecycleHooks | None = None) -> None:
        self.config = config
        self.hooks = hooks or LifecycleHooks()
        self.metrics = ServingMetrics()
        self.repository = ModelRepository.from_settings(config.settings)
        self.registry = Registry()  # one per service: backend instances are shared by every load
        self._platform: Platform | None = None
        self._platform_lock = threading.Lock()
        self.started = False
        self.stopping = False
        self._entries: dict[str, Entry] = {}
        self._lock = asyncio.Lock()
        self._known = {m.name for m in config.models}
        self._wanted = set(self._known)  # what "ready" waits for: start-up models, minus unloads

    @property
    def platform(self) -> Platform:
        """The host's platform, detected on first use and then shared by every model load, stream
        and the web page (reads host files: call it from a worker thread)."""
        with self._platform_lock:
            if self._platform is None:
                self._platform = detect(HostFS(self.config.settings.host_root))
            return self._platform

    # ---- readiness -------------------------------------------------------------------------
    def ready(self) -> bool:
        """Start-up models (less those unloaded on request) loaded and warmed up; not shutting down."""
        return self.started and not self.stopping and all(
            self._state(name) == READY for name in self._wanted)

    def _state(self, name: str) -> str:
        entry = self._entries.get(name)
        return entry.state if entry else UNAVAILABLE

    def is_known(self, name: str) -> bool:
        """A configured model or a package in the repository (cheap check first)."""
        return name in self._known or name in self._entries or name in self.repository.names()

    def metrics_label(self, name: str) -> str:
        """``name`` if the service has seen that model, else "" (bounded label cardinality)."""
        return name if name in self._entries else ""

    def model_ready(self, name: str) -> bool:
        if not self.is_known(name):
            raise ModelNotFoundError(f"unknown model {name!r}; served: {', '.join(self.served()) or 'none'}")
        return self._state(name) == READY and not self.stopping

    def served(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.runner is not None)

    def runner(self, name: str, version: str | None = None) -> ModelRunner:
        """The ready runner for ``name``: 404 when unknown or not loaded, 503 while loading."""
        entry = self._entries.get(name)
        if entry is None or (entry.runner is None and entry.state != LOADING):
            hint = (f"; load it with POST /v2/repository/models/{name}/load"
                    if self.is_known(name) else "")
            if entry is not None and entry.reason:
                hint = f"; {entry.reason}{hint}"
            raise ModelNotFoundError(f"model {name!r} is not loaded (served: "
                                     f"{', '.join(self.served()) or 'none'}){hint}")
        if version not in (None, "", VERSION):
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; versions: {VERSION}")
        if entry.runner is None:
            raise ModelNotReadyError(f"model {name!r} is still loading")
        return entry.runner

    # ---- loading ---------------------------------------------------------------------------
    async def load_startup(self) -> None:
        """Load and warm up every configured model, then call on_ready (or on_failed)."""
        for model in self.config.models:
            self._entries[model.name] = Entry(model.name, LOADING)
        failures = []
        for model in self.config.models:
            if self.stopping:
                return
            try:
                await self._load(model.name)
            except Exception as exc:  # reported through on_failed and the index, never lost
                failures.append(f"{model.name}: {exc}")
        self.started = True
        if failures:
            log.error("start-up failed: %s", "; ".join(failures))
            if self.hooks.on_failed:
                self.hooks.on_failed("; ".join(failures))
        elif not self.stopping:
            log.info("ready: serving %s", ", ".join(self.served()))
            if self.hooks.on_ready:
                self.hooks.on_ready()

    async def _load(self, name: str) -> None:
        model = self.config.model_config(name)
        entry = self._entries.setdefault(name, Entry(name, LOADING))
        try:
            runner = await asyncio.to_thread(load_runner, model, self.config, self.repository, self.metrics,
                                             self.hooks.working, self.platform_and_registry)
        except Exception as exc:
            if entry.runner is None:
                entry.state, entry.reason = UNAVAILABLE, str(exc)
            log.error("model %s failed to load: %s", name, exc)
            raise
        runner.start()
        previous = entry.runner
        entry.state, entry.reason, entry.runner = READY, "", runner
        self.metrics.model_ready.labels(name).set(1)
        if previous is not None:
            await previous.close()

    def platform_and_registry(self) -> tuple[Platform, Registry]:
        return self.platform, self.registry

    def _check_loadable(self, name: str) -> None:
        if name not in self._known and name not in self.repository.names():
            raise ModelNotFoundError(f"no model {name!r} in the repository; available: "
                                     f"{', '.join(sorted(set(self.repository.names()) | self._known))}")

    async def load(self, name: str) -> None:
        """Repository extension: (re)load a model by name; the old one serves until the new is ready."""
        self._check_loadable(name)
        async with self._lock:
            entry = self._entries.setdefault(name, Entry(name, LOADING))
            if entry.runner is None:
                entry.state = LOADING
            await self._load(name)
            self._known.add(name)
            self._wanted.add(name)

    async def unload(self, name: str) -> None:
        """Repository extension: stop serving ``name``; in-flight requests finish first."""
        self._check_loadable(name)
        async with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.runner is None:
                return
            runner, entry.runner = entry.runner, None
            entry.state, entry.reason = UNAVAILABLE, "unloaded"
            self._wanted.discard(name)
            self.metrics.model_ready.labels(name).set(0)
            await runner.close()

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        names = sorted(set(self.repository.names()) | set(self._entries) | self._known)
        rows = []
        for name in names:
            entry = self._entries.get(name)
            state = entry.state if entry else UNAVAILABLE
            reason = entry.reason if entry else "not loaded"
            if not ready_only or state == READY:
                rows.append({"name": name, "version": VERSION, "state": state, "reason": reason})
        return rows

    # ---- shutdown --------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        """Mark not ready and tell the hook; safe to call more than once (signal, then lifespan)."""
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down: finishing in-flight requests")
        if self.hooks.on_stopping:
            self.hooks.on_stopping()

    async def close(self) -> None:
        """Release every model (after the server stopped taking requests)."""
        self.begin_shutdown()
        async with self._lock:
            runners = [e.runner for e in self._entries.values() if e.runner is not None]
            for entry in self._entries.values():
                entry.runner = None
            await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)
