"""One reconcile tick of a CarbonAwareJob: observe -> gridwise.step.step (pure) -> act -> write status.

Knows no kopf: handlers pass the object in and post the Events it returns. Nothing here raises for
a problem the cluster can cause: a failed read is an observation error, a rejected Job change comes
back through `act_failed`, a failed status write is kept in memory and retried on the next tick
(accounting integrates from the last written time, so nothing is lost or counted twice), and an
unexpected exception ends in `fail_safe`, which keeps the job running if its deadline needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.accounting import Usage, throughput
from gridwise.api import (
    GROUP,
    KUEUE_QUEUE_LABEL,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGER,
    PLURAL,
    VERSION,
    JobSpec,
    SpecError,
    parse_time,
)
from gridwise.carbon import SignalReading
from gridwise.carbon.registry import signal_type_for
from gridwise.clock import Clock
from gridwise.job_signal import JobSignal, SignalBoard
from gridwise.k8s.actuator import ANNOTATION_GENERATION, ANNOTATION_SHAPE, Actuator, shape_of
from gridwise.k8s.builders import METRICS_PORT, is_elastic, job_name
from gridwise.k8s.drains import PauseDrains
from gridwise.k8s.kube import Kube
from gridwise.k8s.secret_cache import SecretCache
from gridwise.metrics import JobView, OperatorMetrics
from gridwise.progress import SCRAPE_SLOTS, SilentPods, scrape
from gridwise.signal_hub import SignalHub
from gridwise.status_writes import WritePolicy, status_patch, write_reason
from gridwise.step import (
    CREATE,
    DELETE,
    OWNER_NONE,
    OWNER_OTHER,
    OWNER_US,
    SCALE,
    Event,
    JobState,
    Observed,
    ObserveError,
    Resource,
    StepResult,
    act_failed,
    effective_spec,
    fail_safe,
    step,
)

log = logging.getLogger(__name__)

# How long a Job patch of ours may be missing from the Job watch before the watch is believed
# again. In scale_bench run D (1000 jobs, 2 cores) 549 Jobs were patched a second time 20-23 s
# after their pause, as a stale index would cause.
EXPECT_S = 60.0

# More ticks than this deciding at once is a burst (a zone wake): pods that gave no usable answer
# to their last scrape are not asked in it (progress.SilentPods).
BUSY_TICKS = SCRAPE_SLOTS

NORMAL, WARNING = "Normal", "Warning"


@dataclass
class OperatorContext:
    """What every tick needs; built once per operator process (or per test)."""

    clock: Clock
    kube: Kube
    signals: SignalHub
    metrics: OperatorMetrics
    scraper: httpx.AsyncClient
    scrape_port: int = METRICS_PORT
    # Where pods reach the operator's /v1/signal (--signal-url); None: trainers are not told.
    signal_base: str | None = None
    # Each job's last decided reading, for that endpoint; outlives a reconciler (shared per process).
    board: SignalBoard = field(default_factory=SignalBoard)


@dataclass(frozen=True)
class PodInfo:
    """One pod of a Job, as the watch index keeps it."""

    name: str
    phase: str
    ip: str | None
    terminating: bool
    running_since: float | None = None  # Unix time its containers last started running, if it says


FINISHED_CONDITIONS = ("Complete", "Failed")  # a Job's terminal conditions


def _unix(text: Any) -> float | None:
    """A Kubernetes timestamp as Unix seconds; None for anything that is not one."""
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text).timestamp()
    except SpecError:
        return None


def _finished_condition(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Job's true Complete or Failed condition (the last one listed), or None while it runs."""
    found = None
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in FINISHED_CONDITIONS:
            found = cond
    return found


def finished_at(job: Mapping[str, Any]) -> float | None:
    """When the Job finished (Unix seconds): its completionTime, else its Failed condition's time."""
    done = _unix((job.get("status") or {}).get("completionTime"))
    if done is not None:
        return done
    cond = _finished_condition(job)
    return _unix(cond.get("lastTransitionTime")) if cond is not None else None


def _running_since(status: Mapping[str, Any]) -> float | None:
    """When the last of the pod's running containers started (so it was Running by then), or None.

    The latest start, not the earliest: after a container restart the pod is booked from the
    restart, which can only under-count, never count a second time.
    """
    starts: list[float] = []
    for c in status.get("containerStatuses") or []:
        state = (c.get("state") or {}) if isinstance(c, Mapping) else {}
        running = state.get("running") if isinstance(state, Mapping) else None
        at = _unix(running.get("startedAt")) if isinstance(running, Mapping) else None
        if at is not None:
            starts.append(at)
    return max(starts) if starts else None


@dataclass(frozen=True)
class IndexView:
    """What a watch already knows (kopf's indexes), so a tick need not ask the API server."""

    job: Mapping[str, Any] | None
    pods: list[PodInfo] = field(default_factory=list)


@dataclass
class TickResult:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    action: str = "none"
    written: bool = True
    retry_after: float | None = None  # set when a transient error wants a backoff
    write_due: datetime | None = None  # a deferred status write is due by then (clock time)


def pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    """A pod as the index keeps it; None for pods that finished (they draw nothing)."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    if phase in ("Succeeded", "Failed"):
        return None
    meta = pod.get("metadata") or {}
    return PodInfo(
        name=str(meta.get("name", "")),
        phase=phase,
        ip=status.get("podIP"),
        terminating=bool(meta.get("deletionTimestamp")),
        running_since=_running_since(status) if phase == "Running" else None,
    )


def classify(exc: BaseException) -> tuple[str, bool]:
    """(what happened, transient?) for an error from the API server or the network."""
    if isinstance(exc, ApiException):
        code = int(exc.status or 0)
        detail = str(exc.reason or "")[:300]
        if code == 429 or code >= 500 or code == 409:
            return f"HTTP {code}: {detail}", True
        return f"HTTP {code}: {detail}", False
    if isinstance(exc, (TimeoutError, OSError, httpx.TransportError)) or type(exc).__module__.startswith(
        "aiohttp"
    ):
        return f"{type(exc).__name__}: {exc}"[:300], True
    return f"{type(exc).__name__}: {exc}"[:300], False


def job_state(job: Mapping[str, Any], res: Resource) -> JobState:
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    refs = meta.get("ownerReferences") or []
    controller = [r for r in refs if r.get("controller")]
    labels = meta.get("labels") or {}
    if any(r.get("uid") == res.uid for r in controller):
        owner = OWNER_US
    elif not controller and labels.get(LABEL_JOB) == res.name and labels.get(LABEL_MANAGED_BY) == MANAGER:
        owner = OWNER_NONE
    else:
        owner = OWNER_OTHER
    cond = _finished_condition(job)
    finished = None if cond is None else "Succeeded" if cond["type"] == "Complete" else "Failed"
    annotations = meta.get("annotations") or {}
    gen = annotations.get(ANNOTATION_GENERATION)
    return JobState(
        uid=str(meta.get("uid", "")),
        owner=owner,
        suspended=bool(spec.get("suspend")),
        parallelism=int(spec.get("parallelism") or 0),
        indexed=spec.get("completionMode") == "Indexed",
        finished=finished,
        kueue=KUEUE_QUEUE_LABEL in labels,
        deleting=bool(meta.get("deletionTimestamp")),
        generation=int(gen) if gen is not None and str(gen).isdigit() else None,
        shape=annotations.get(ANNOTATION_SHAPE),
    )


def _legacy_shape(state: JobState, spec: JobSpec) -> JobState:
    """A Job built before fingerprints: a completion mode that no longer fits the spec is a template edit."""
    if state.shape is None and state.indexed != is_elastic(spec):
        return dataclasses.replace(state, shape="completion-mode-differs")
    return state


def _stale_reading(spec: Mapping[str, Any], reason: str, now: datetime) -> SignalReading:
    carbon = spec.get("carbon") or {}
    return SignalReading(
        zone=str(carbon.get("zone", "")),
        provider=str(carbon.get("provider", "")),
        signal_type=signal_type_for(carbon),
        current=None,
        forecast=(),
        stale=True,
        reason=reason,
        fetched_at=now,
    )


class Reconciler:
    def __init__(
        self,
        ctx: OperatorContext,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        write_policy: WritePolicy | None = None,
        act_first_s: float = 5.0,
        pause_write_hold_s: float = 0.0,
    ) -> None:
        """`backoff_s` doubles per consecutive transient failure of one object, up to `max_backoff_s`.

        `act_first_s`: how long a status write waits for other jobs' Job changes still being decided.
        `pause_write_hold_s`: how long it then waits for pauses' pods to be counted out (drains.py);
        0 without a Job watch to report them (`drains.seen`).
        """
        self.ctx = ctx
        # When a zone wakes a thousand jobs at once, their Job patches (what pauses the pods) go
        # before any of their status writes, which would otherwise queue in front of them on the
        # same connections and API server. Counts ticks that have not yet acted on their Job.
        self._deciding = 0
        self._acted = asyncio.Event()
        self._acted.set()
        self._act_first_s = act_first_s
        self.drains = PauseDrains(pause_write_hold_s)
        self._silent = SilentPods()  # pods not to ask now: timed out a while ago, or refused in a wake
        self._scrape_slots = asyncio.Semaphore(SCRAPE_SLOTS)
        self._secrets = SecretCache(self._read_secret)  # one read per Secret per minute, not per tick
        self.write_policy = write_policy or WritePolicy()
        # The status last written for each object, and when (clock time): what readers have seen.
        self._written: dict[str, tuple[dict[str, Any], datetime | None]] = {}
        self._write_failure: dict[str, str] = {}  # uid -> why its last status write failed
        self._backoff_s, self._max_backoff_s = backoff_s, max_backoff_s
        self.actuator = Actuator(ctx.kube, ctx.signal_base)
        self._locks: dict[str, asyncio.Lock] = {}
        # The last status each object's tick computed, written or not (the write failed): the next
        # tick starts from it when the watched body is older (a failed write, or a watch event
        # that has not arrived yet), so no pause record, Event or interval is lost or repeated.
        self._latest: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, int] = {}
        # Monotonic time before which a tick after a transient error is skipped (backoff).
        self._not_before: dict[str, float] = {}
        # Job spec fields this process patched that the Job watch may not show yet, until when
        # (monotonic): a tick woken by the pods' events meanwhile would see the Job as it was and
        # pause it again, with a second pause on record (the Job controller's "expectations").
        self._expected: dict[str, tuple[dict[str, Any], float]] = {}

    def forget(self, uid: str) -> None:
        self._expected.pop(uid, None)
        self._locks.pop(uid, None)
        self._written.pop(uid, None)
        self._write_failure.pop(uid, None)
        self._latest.pop(uid, None)
        self._failures.pop(uid, None)
        self._not_before.pop(uid, None)

    async def tick(self, body: Mapping[str, Any], index: IndexView | None = None) -> TickResult:
        """One reconcile, never two at once for one object; without `index` it reads from the API."""
        res = Resource.from_body(body)
        lock = self._locks.setdefault(res.uid or res.key, asyncio.Lock())
        if time.monotonic() < self._not_before.get(res.uid, 0.0):
            # Backing off after a transient error: this tick is skipped, the timer keeps running.
            return TickResult(dict(body.get("status") or {}), [], "backoff", True, None)
        started = time.perf_counter()
        async with lock:
            try:
                return await self._tick(body, res, index)
            finally:
                self.ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    def _begin_deciding(self) -> None:
        self._deciding += 1
        self._acted.clear()

    def _done_deciding(self) -> None:
        self._deciding -= 1
        if self._deciding <= 0:
            self._deciding = 0
            self._acted.set()

    async def _after_pending_acts(self) -> None:
        """Until no tick is still deciding its Job change (at most `act_first_s`)."""
        if not self._acted.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acted.wait(), timeout=self._act_first_s)

    def _status_in(self, res: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """The body's status, or the newer one this process computed (not yet written or not yet seen)."""
        status = dict(body.get("status") or {})
        pending = self._latest.get(res.uid)
        if pending is None:
            return status

        def last(s: Mapping[str, Any]) -> datetime | None:
            t = (s.get("accounting") or {}).get("lastTime")
            try:
                return parse_time(t) if t else None
            except SpecError:
                return None

        mine, theirs = last(pending), last(status)
        if mine is not None and (theirs is None or mine >= theirs):
            return dict(pending)
        return status

    async def _tick(self, body: Mapping[str, Any], res: Resource, index: IndexView | None) -> TickResult:
        now = self.ctx.clock.now()
        status = self._status_in(res, body)
        seen: dict[str, Any] = {}
        self._begin_deciding()
        try:
            result, observed, retry = await self._decide_and_act(body, res, status, index, now, seen)
        finally:
            self._done_deciding()
        # Write only what readers use when it changes, else at most every policy interval
        # (status_writes.py); a deferred status stays in memory and the next tick builds on it.
        written_status, written_at = self._written.get(res.uid) or _as_written(body)
        why = write_reason(written_status, written_at, result.status, now, self.write_policy)
        write_due: datetime | None = None
        if why is None:
            self._latest[res.uid] = result.status
            written = True
            if written_at is not None and result.status != written_status:
                write_due = written_at + self.write_policy.max_interval
        else:
            failing = res.uid in self._write_failure
            await self._after_pending_acts()
            if not await self.drains.settled((res.namespace, res.name)):
                # Wanted for a decision while the write waited for other jobs' pauses: the tick
                # that follows at once builds on this status and writes it (drains.py).
                self._latest[res.uid] = result.status
                written, write_due = True, now
            else:
                written = await self._write(res, result.status, status_patch(written_status, result.status))
                if written:
                    self.ctx.metrics.status_writes.labels(reason=why).inc()
                    self._written[res.uid] = (result.status, now)
                    if self._write_failure.pop(res.uid, None) is not None:
                        log.info("%s: status written again", res.key)
                elif not failing:
                    # Once per failure streak, where the job's owner looks (`kubectl describe`):
                    # the status cannot say it itself. The job keeps being acted on meanwhile.
                    warning = Event(
                        WARNING,
                        "StatusWriteFailed",
                        f"status not written ({self._write_failure[res.uid]}); the job is still "
                        "reconciled and its totals are kept in memory until a write succeeds",
                    )
                    result = dataclasses.replace(result, events=(*result.events, warning))
        if not written and retry is None:
            retry = self._backoff(res.uid)
        if retry is None:
            self._failures.pop(res.uid, None)
            self._not_before.pop(res.uid, None)
        else:
            self._not_before[res.uid] = time.monotonic() + retry
        if result.decision != "none":
            self.ctx.metrics.decisions.labels(kind=result.decision, reason=result.decision_reason).inc()
        if result.spec is not None and result.status.get("progress") is not None:
            self._export(result.spec, result.status, observed.reading if observed else None, now)
        if result.spec is not None:
            # What this tick decided with is what the job's trainer reads (GET /v1/signal/...).
            forecast = observed.reading.forecast if observed is not None else ()
            self.ctx.board.put(
                res.namespace, res.name, JobSignal(result.status.get("carbonIntensity"), forecast, now)
            )
        for event in result.events:
            level = logging.WARNING if event.type == WARNING else logging.INFO
            log.log(level, "%s: %s: %s", res.key, event.reason, event.message)
        return TickResult(
            result.status,
            [(e.type, e.reason, e.message) for e in result.events],
            result.decision if result.decision != "none" else _action_name(result),
            written,
            retry,
            write_due,
        )

    async def _decide_and_act(
        self,
        body: Mapping[str, Any],
        res: Resource,
        status: Mapping[str, Any],
        index: IndexView | None,
        now: datetime,
        seen: dict[str, Any],
    ) -> tuple[StepResult, Observed | None, float | None]:
        """Observe, step and apply the Job change: the part of a tick that pauses or resumes pods."""
        retry: float | None = None
        observed: Observed | None = None
        try:
            observed = await self.observe(body, res, status, index, now, seen)
            result = step(res, status, observed, now)
        except Exception as exc:  # a bug or an unforeseen answer: still end in a defined state
            what, _ = classify(exc)
            log.exception("%s: reconcile failed; keeping the job safe", res.key)
            raw = seen.get("job")
            job = job_state(raw, res) if raw is not None else None
            result = fail_safe(res, status, job, now, "InternalError", f"reconcile failed: {what}")
            observed = None
        if observed is not None and observed.error is not None and observed.error.transient:
            retry = self._backoff(res.uid)
        if result.change and result.spec is not None:
            try:
                scaled = await self.actuator.apply(body, result.spec, res.generation, result.change)
                if scaled:
                    self._expected[res.uid] = (scaled, time.monotonic() + EXPECT_S)
                    if scaled.get("suspend") is True:
                        self.drains.started((res.namespace, job_name(res.name)))
                elif any(a.kind in (CREATE, DELETE) for a in result.change):
                    self._expected.pop(res.uid, None)
            except Exception as exc:
                what, transient = classify(exc)
                kind = next(iter(getattr(exc, "__notes__", []) or []), "")
                verb = kind.rsplit(" ", 1)[-1] if kind else "change"
                reason = {
                    CREATE: "JobCreateFailed",
                    "delete": "JobDeleteFailed",
                    "adopt": "JobAdoptFailed",
                }.get(verb, "JobPatchFailed")
                log.warning("%s: Job %s failed: %s", res.key, verb, what)
                result = act_failed(result, reason, f"Job {verb} failed: {what}", now, res.generation)
                if transient:
                    retry = self._backoff(res.uid)
        return result, observed, retry

    def _backoff(self, uid: str) -> float:
        n = self._failures.get(uid, 0)
        self._failures[uid] = n + 1
        return float(min(self._max_backoff_s, self._backoff_s * 2.0**n))

    async def _write(self, res: Resource, status: dict[str, Any], patch: Mapping[str, Any]) -> bool:
        """Writes the status (as `patch`); on failure keeps it in memory for the next tick."""
        try:
            await self.ctx.kube.patch_status(GROUP, VERSION, PLURAL, res.namespace, res.name, patch)
            self._latest[res.uid] = status
            return True
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to keep
                self.forget(res.uid)
                return True
            what, _ = classify(exc)
        except Exception as exc:
            what, _ = classify(exc)
        self._latest[res.uid] = status
        self.ctx.metrics.reconcile_errors.inc()
        self.ctx.metrics.status_write_errors.inc()
        log.warning("%s: status write failed (%s); kept in memory, retried next tick", res.key, what)
        self._write_failure[res.uid] = what
        return False

    async def observe(
        self,
        body: Mapping[str, Any],
        res: Resource,
        status: Mapping[str, Any],
        index: IndexView | None,
        now: datetime,
        seen: dict[str, Any] | None = None,
    ) -> Observed:
        """Reads what the step needs; every failure becomes part of the observation.

        `seen` gets the raw Job as soon as it is known, for the fail-safe if a later part breaks.
        """
        seen = {} if seen is None else seen
        try:
            # An invalid edit to a job whose Job runs is observed (and acted on) by the last accepted spec.
            spec = effective_spec(res, status, now).spec
        except SpecError as exc:
            return Observed(job=None, reading=_stale_reading(res.spec, str(exc), now))
        name = job_name(spec.name)
        error: ObserveError | None = None
        job_known = True
        raw = self._as_patched(res.uid, index.job) if index is not None else None
        if raw is None:  # not indexed (yet, or not labelled as ours): ask the API server
            try:
                raw = await self.ctx.kube.get_job(spec.namespace, name)
                index = None  # the pod index may be as stale as the job index was
            except Exception as exc:
                what, transient = classify(exc)
                error, job_known = (
                    ObserveError("JobReadFailed", f"reading Job {name} failed: {what}", transient),
                    False,
                )
        seen["job"] = raw
        job = _legacy_shape(job_state(raw, res), spec) if raw is not None else None

        pods: list[PodInfo] = []
        pods_known = True
        if index is not None:
            pods = list(index.pods)
        elif job_known:
            try:
                pods = [p for p in map(pod_info, await self.ctx.kube.job_pods(spec.namespace, name)) if p]
            except Exception as exc:
                what, transient = classify(exc)
                pods_known = False
                error = error or ObserveError(
                    "PodListFailed", f"listing pods of {name} failed: {what}", transient
                )
        working = [p for p in pods if p.phase == "Running" and not p.terminating]
        usage = Usage(working=len(working), drawing=sum(1 for p in pods if p.phase == "Running"))

        reading = await self._read_signal(spec, now)
        trainer = None
        ips = [p.ip for p in working if p.ip]
        if ips:
            try:
                # More ticks deciding than scrapes may be in flight is a zone wake: its pods that did
                # not answer last time are asked next tick, not in front of a thousand Job patches.
                busy = self._deciding > BUSY_TICKS
                trainer = await scrape(
                    self.ctx.scraper,
                    ips,
                    self.ctx.scrape_port,
                    self._silent,
                    self._scrape_slots,
                    busy,
                    lambda result, n: self.ctx.metrics.trainer_scrapes.labels(result=result).inc(n),
                )
            except Exception as exc:  # the scrape is best effort: the model estimates instead
                log.info("%s: trainer scrape failed: %s", res.key, classify(exc)[0])
        observed = Observed(
            job=job,
            reading=reading,
            desired_shape=shape_of(spec),
            pods=usage,
            pods_present=len(pods),
            pods_known=pods_known,
            started=tuple(self.ctx.clock.at_wall(p.running_since) for p in working if p.running_since),
            ended=self.ctx.clock.at_wall(end) if raw is not None and (end := finished_at(raw)) else None,
            trainer=trainer,
            job_known=job_known,
            error=error,
        )
        return observed

    def _as_patched(self, uid: str, job: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The indexed Job with what this process last patched into its spec, until the watch shows it."""
        expected = self._expected.get(uid)
        if job is None or expected is None:
            return job
        fields, until = expected
        spec = job.get("spec") or {}
        if time.monotonic() > until or all(spec.get(k) == v for k, v in fields.items()):
            del self._expected[uid]
            return job
        return {**job, "spec": {**spec, **fields}}

    async def _read_signal(self, spec: JobSpec, now: datetime) -> SignalReading:
        """The carbon reading; a missing or forbidden Secret or a bad provider spec is a stale one."""
        secret: dict[str, str] = {}
        ref = (spec.carbon.get("secretRef") or {}).get("name")
        if ref:
            try:
                secret = await self._secrets.get(spec.namespace, str(ref))
            except Exception as exc:
                what, _ = classify(exc)
                if isinstance(exc, ApiException) and exc.status == 404:
                    what = f"Secret {ref} not found in namespace {spec.namespace}"
                elif isinstance(exc, ApiException) and exc.status == 403:
                    what = f"the operator may not read Secret {ref} in namespace {spec.namespace}"
                return _stale_reading({"carbon": spec.carbon}, f"carbon credentials unavailable: {what}", now)
        try:
            signal = await self.ctx.signals.get(spec.carbon, secret)
            return await signal.read()
        except ValueError as exc:
            # A misconfigured provider (missing key, unreadable trace) is an outage for this job.
            # An access refusal carries a message that is safe to show the tenant (`public_message`).
            why = getattr(exc, "public_message", None) or str(exc)
            return _stale_reading({"carbon": spec.carbon}, f"carbon provider misconfigured: {why}", now)
        except Exception as exc:  # a provider bug is an outage too, not a frozen job
            log.exception("carbon signal for %s/%s failed", spec.namespace, spec.name)
            return _stale_reading({"carbon": spec.carbon}, f"carbon signal failed: {classify(exc)[0]}", now)

    async def _read_secret(self, namespace: str, name: str) -> dict[str, str]:
        data = await self.ctx.kube.read_secret(namespace, name)
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def _export(
        self, spec: JobSpec, status: Mapping[str, Any], reading: SignalReading | None, now: datetime
    ) -> None:
        m = self.ctx.metrics
        remaining = max(0.0, spec.work_gpu_hours * (1 - float(status.get("progress", 0.0))))
        rate = throughput(spec.max_replicas, spec.scaling_efficiency)
        slack = (spec.deadline - now).total_seconds() - remaining / rate * 3600
        signal_type = reading.signal_type if reading is not None else signal_type_for(spec.carbon)
        m.jobs.update(
            JobView(
                namespace=spec.namespace,
                name=spec.name,
                phase=str(status.get("phase", "Pending")),
                replicas=int(status.get("replicas", 0)),
                energy_joules=float(status.get("energyJoules", 0.0)),
                emissions_grams=float(status.get("emissionsGrams", 0.0)),
                avoided_grams=float(status.get("avoidedEmissionsGrams", 0.0)),
                progress=float(status.get("progress", 0.0)),
                deadline_slack_seconds=slack,
                signal_type=signal_type,
            )
        )
        if reading is None:
            return
        zone = reading.zone
        m.signal_stale.labels(zone=zone, provider=reading.provider).set(1 if reading.stale else 0)
        if reading.current is not None:
            m.intensity.labels(zone=zone, provider=reading.provider, signal_type=reading.signal_type).set(
                reading.current.grams_per_kwh
            )
        for hours in (1, 6, 12, 24):
            when = now + timedelta(hours=hours)
            point = next((p for p in reading.forecast if p.start <= when < p.end), None)
            if point is not None:
                m.forecast.labels(
                    zone=zone,
                    provider=reading.provider,
                    signal_type=reading.signal_type,
                    hours_ahead=str(hours),
                ).set(point.grams_per_kwh)


def _as_written(body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, datetime | None]:
    """What the API server holds now: after a restart, the last status a previous process wrote."""
    status = dict(body.get("status") or {})
    if not status:
        return None, None
    last = (status.get("accounting") or {}).get("lastTime")
    try:
        return status, parse_time(last) if last else None
    except SpecError:
        return status, None


def _action_name(result: StepResult) -> str:
    kinds = [a.kind for a in result.change if a.kind != SCALE]
    return kinds[0] if kinds else "none"


__all__ = ["Event", "IndexView", "OperatorContext", "PodInfo", "Reconciler", "TickResult", "pod_info"]
