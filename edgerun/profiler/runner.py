"""Profile a model on one or more backends: cold start, warm-up, then a measured phase with sampling."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends.base import LoadOptions
from ..backends.registry import Registry, Selection
from ..errors import EdgerunError, InvalidInputError
from ..hal import HostFS, Platform, detect
from ..hal.power import CommandRunner, PowerSensor, host_runner, survey_power_sensors, unavailable_reason
from ..hal.thermal import TempSensor, discover_temp_sensors, read_throttled
from ..predictor import effective_settings, open_session
from ..repository import DEFAULT_CLASSIFIER, ModelPackage, ModelRepository
from . import resources
from .agreement import Reference, reference_top1, sample_images, top1_agreement
from .energy import idle_watts, measure_idle, summarize_power
from .sampling import Sampler, SamplerRecord
from .scenarios import (
    SCENARIOS,
    Budget,
    Progress,
    QueryTrace,
    resolve_batch,
    run_scenario,
    scenario_metrics,
    synthetic_inputs,
)
from .stats import Clock, LatencyStats, query_count_checks, summarize
from .thermals import summarize_thermal

if TYPE_CHECKING:
    from ..backends.options import BackendOptions

log = logging.getLogger(__name__)

DEFAULT_RUNS = 200
ALL_BACKENDS = "all"
# start(stage label, total or None) -> per-query callback; the CLI draws a progress bar with it.
ProgressFactory = Callable[[str, "int | None"], Progress]


@dataclass(frozen=True)
class ProfileConfig:
    """What to run and how; validated on creation."""

    scenario: str = "single-stream"
    runs: int | None = None
    duration_s: float | None = None
    warmup: int = 10
    batch: int | None = None
    qps: float | None = None
    latency_bound_ms: float = 100.0
    threads: int | None = None
    idle_s: float = 2.0
    subtract_idle: bool = False
    power_interval_s: float = 0.1
    seed: int = 0
    samples_dir: Path | None = None
    reference: str | None = None
    options: BackendOptions | None = None  # the profiled backend's typed options (--option)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise InvalidInputError(f"unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}")
        if self.scenario == "server" and self.qps is None:
            raise InvalidInputError("scenario server needs --qps Q (the Poisson arrival rate)")
        checks = {"--warmup": self.warmup >= 0, "--idle": self.idle_s >= 0,
                  "--power-interval": self.power_interval_s > 0,
                  "--latency-bound-ms": self.latency_bound_ms > 0,
                  "--qps": self.qps is None or self.qps > 0,
                  "--threads": self.threads is None or self.threads > 0}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise InvalidInputError(f"out of range: {', '.join(bad)} (counts >= 0, rates and times > 0)")
        self.budget()

    def budget(self) -> Budget:
        if self.runs is None and self.duration_s is None:
            return Budget(runs=DEFAULT_RUNS)
        return Budget(self.runs, self.duration_s)

    def to_dict(self) -> dict[str, Any]:
        budget = self.budget()
        return {"scenario": self.scenario, "runs": budget.runs, "duration_s": budget.duration_s,
                "warmup": self.warmup, "batch": self.batch, "qps": self.qps,
                "latency_bound_ms": self.latency_bound_ms, "threads": self.threads, "idle_s": self.idle_s,
                "subtract_idle": self.subtract_idle, "power_interval_s": self.power_interval_s,
                "seed": self.seed, "options": self.options.effective() if self.options else None}


@dataclass
class Host:
    """What the profiler reads from the host once: platform, power and temperature sensors, vcgencmd."""

    fs: HostFS
    platform: Platform
    power_sensors: list[PowerSensor]
    power_findings: dict[str, str]
    temp_sensors: list[TempSensor]
    runner: CommandRunner

    @classmethod
    def probe(cls, fs: HostFS, runner: CommandRunner | None = None) -> Host:
        runner = runner or host_runner(fs)
        sensors, findings = survey_power_sensors(fs, runner)
        return cls(fs, detect(fs), sensors, findings, discover_temp_sensors(fs), runner)

    def power_unavailable(self) -> str | None:
        if self.power_sensors:
            return None
        where = "" if self.fs.is_live else f" [emulated tree {self.fs.root}]"
        return unavailable_reason(self.power_findings) + where


@dataclass
class BackendRun:
    """One backend's profile; ``status`` is ok, unavailable (not run) or failed (with the reason)."""

    backend: str
    status: str
    reason: str | None = None
    artifact: dict[str, Any] | None = None
    cold_start: dict[str, float] | None = None
    latency: LatencyStats | None = None
    scenario: dict[str, Any] = field(default_factory=dict)
    mlperf_min_queries: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    power: dict[str, Any] = field(default_factory=dict)
    thermal: dict[str, Any] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # effective: defaults resolved
    trace: QueryTrace | None = None
    samples: SamplerRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": self.status, "reason": self.reason,
                "device": self.device, "options": self.options,
                "artifact": self.artifact, "cold_start": self.cold_start,
                "latency_ms": self.latency.to_dict() if self.latency else None,
                "scenario": self.scenario, "mlperf_min_queries": self.mlperf_min_queries,
                "memory": self.memory, "cpu": self.cpu, "power": self.power, "thermal": self.thermal,
                "top1_agreement": self.agreement}


@dataclass
class ProfileReport:
    """Everything one `edgerun profile` run found; ``origin_ns`` is time zero for traces and plots."""

    model: ModelPackage
    config: ProfileConfig
    host: Host
    runs: list[BackendRun]
    origin_ns: int
    idle: SamplerRecord | None = None
    idle_w: dict[str, float] = field(default_factory=dict)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 2)


def _artifact_info(selection: Selection) -> dict[str, Any]:
    artifact = selection.artifact
    return {"file": artifact.path.name, "format": artifact.format, "precision": artifact.precision,
            "selection": selection.explain()}


def _timed_ms(clock: Clock, call: Callable[[], object]) -> float:
    start = clock()
    call()
    return (clock() - start) / 1e6


class Profiler:
    """Runs one `edgerun profile`: idle baseline, then each backend's cold start and measured phase."""

    def __init__(self, config: ProfileConfig, host: Host, repository: ModelRepository,
                 registry: Registry | None = None, clock: Clock = time.perf_counter_ns,
                 progress: ProgressFactory | None = None) -> None:
        self.config, self.host, self.repository = config, host, repository
        self.registry = registry or Registry()
        self.clock = clock
        self.progress = progress
        self.idle_w: dict[str, float] = {}
        self._reference: Reference | None = None

    def run(self, model: str | Path | None, backend: str | None) -> ProfileReport:
        """Profile ``model`` on ``backend`` (a name, "all", or None for the automatic choice)."""
        model = model or DEFAULT_CLASSIFIER
        package = self.repository.get(model)           # unknown model: fails before any work
        targets = self._targets(backend, package)      # unknown backend: likewise
        origin = self.clock()
        idle = measure_idle(self.host.power_sensors, self.config.idle_s, self.config.power_interval_s,
                            self.clock)
        self.idle_w = idle_watts(idle)
        runs = [self._run_target(model, name, skip, strict=backend != ALL_BACKENDS)
                for name, skip in targets]
        return ProfileReport(package, self.config, self.host, runs, origin, idle, self.idle_w)

    def _targets(self, backend: str | None, package: ModelPackage) -> list[tuple[str | None, str | None]]:
        """(backend name or None for automatic, reason to skip it or None)."""
        if backend != ALL_BACKENDS:
            if backend is not None:
                self.registry.get(backend)
            return [(backend, None)]
        targets: list[tuple[str | None, str | None]] = []
        for name in self.registry.order():
            try:
                instance = self.registry.get(name)
                availability = instance.probe(self.host.platform)
            except Exception as exc:  # a broken plugin must not stop the comparison
                targets.append((name, f"backend failed to load: {exc}"))
                continue
            if not availability.ok:
                targets.append((name, availability.reason))
            elif package.artifact_for(instance.formats) is None:
                targets.append((name, f"model {package.name} has no {'/'.join(instance.formats)} artifact"))
            else:
                targets.append((name, None))
        return targets

    def _run_target(self, model: str | Path, name: str | None, skip: str | None, strict: bool) -> BackendRun:
        if skip is not None:
            return BackendRun(str(name), "unavailable", skip)
        if strict:
            return self.profile_backend(model, name)
        try:
            return self.profile_backend(model, name)
        except EdgerunError as exc:
            log.warning("backend %s failed: %s", name, exc)
            return BackendRun(str(name), "failed", str(exc))

    def profile_backend(self, model: str | Path, backend: str | None) -> BackendRun:
        """Load, time the first inference, warm up, then measure."""
        config, clock = self.config, self.clock
        rss_before = resources.rss_bytes()
        start = clock()
        package, selection, session = open_session(
            model, backend=backend, options=LoadOptions(threads=config.threads, options=config.options),
            repository=self.repository, registry=self.registry, platform=self.host.platform)
        load_ms = (clock() - start) / 1e6
        try:
            settings = effective_settings(session)
            run = BackendRun(selection.backend.name, "ok", artifact=_artifact_info(selection),
                             device=settings["device"], options=settings["options"])
            run.memory.update(rss_before_load_mb=_mb(rss_before),
                              rss_after_load_mb=_mb(resources.rss_bytes()))
            batch = resolve_batch(session.input_specs, config.batch, config.scenario)
            call = functools.partial(session.infer, synthetic_inputs(session.input_specs, batch, config.seed))
            run.cold_start = {"load_ms": load_ms, "first_inference_ms": _timed_ms(clock, call)}
            for _ in range(config.warmup):
                call()
            self.measure(call, batch, run)
            self._summarize(run)
            run.agreement = top1_agreement(package, session, selection, self._reference_for(model))
        finally:
            session.close()
        return run

    def measure(self, call: Callable[[], object], batch: int, run: BackendRun) -> None:
        """The measured phase: the scenario loop with the sampler running; fills ``run``."""
        config, host = self.config, self.host
        label = f"{run.backend} {config.scenario}"
        progress = self.progress(label, config.budget().runs) if self.progress else None
        sampler = Sampler(host.power_sensors, config.power_interval_s, host.temp_sensors,
                          resources.rss_bytes, self.clock)
        throttled_before = read_throttled(host.runner)
        rss_start, cpu_start, wall_start = resources.rss_bytes(), resources.cpu_seconds(), time.perf_counter()
        sampler.start()
        try:
            run.trace = run_scenario(config.scenario, call, config.budget(), batch, config.qps, self.clock,
                                     seed=config.seed, progress=progress)
        finally:
            run.samples = sampler.stop()
        cpu_used, wall = resources.cpu_seconds() - cpu_start, time.perf_counter() - wall_start
        rss_end = resources.rss_bytes()
        run.memory.update(rss_start_mb=_mb(rss_start), rss_end_mb=_mb(rss_end),
                          growth_mb=_mb(rss_end - rss_start) if rss_end and rss_start else None,
                          peak_during_run_mb=_mb(max(run.samples.rss_bytes, default=0) or None),
                          peak_process_mb=_mb(resources.peak_rss_bytes()))
        run.cpu = {"cpu_seconds": cpu_used, "wall_seconds": wall,
                   "utilisation_percent_of_one_cpu": 100.0 * cpu_used / wall if wall else None,
                   "cpus": resources.cpu_count()}
        run.thermal = summarize_thermal(host.temp_sensors, run.samples.temps_c, throttled_before,
                                        read_throttled(host.runner))

    def _summarize(self, run: BackendRun) -> None:
        trace, config = run.trace, self.config
        assert trace is not None
        run.latency = summarize(trace.latencies_ns())
        run.scenario = {"name": trace.scenario, **scenario_metrics(trace, config.latency_bound_ms)}
        run.mlperf_min_queries = query_count_checks(trace.queries)
        run.power = summarize_power(run.samples, self.host.power_unavailable(), trace.duration_ns() / 1e9,
                                    trace.samples, self.idle_w, config.subtract_idle, config.power_interval_s)

    def _reference_for(self, model: str | Path) -> Reference:
        if self._reference is None:
            images = sample_images(self.config.samples_dir)
            self._reference = reference_top1(self.config.reference or model, images, self.repository,
                                             self.registry, self.host.platform, self.config.threads)
        return self._reference
