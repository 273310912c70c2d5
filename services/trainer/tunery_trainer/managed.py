"""A fine-tuning job run by a managed provider, mirrored into our job record.

A trainer worker that claimed a job whose model a provider offers (see `providers.py`) calls
`run_managed_job` instead of training locally. The run uploads the job's files to the provider,
creates the job there (same method, hyperparameters, suffix and seed, the provider's model name)
and follows it: the remote job's events, checkpoints, figures and final status become ours.

Redelivery-safe: the remote job id is written into our record (`provider_job_id`) before
anything else, and the remote job carries our job id in its metadata, so a job that comes back
after a worker died re-attaches to the job it created instead of creating (and paying for) a
second one. Remote events are published under ids derived from their remote ids (also their
Nats-Msg-Id) and a run skips the ones the job's event stream already holds: each remote event
appears once, however many runs followed the job.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI
from tunery_common.bus import Bus, make_event
from tunery_common.leases import Lease
from tunery_common.records import (
    FINAL_STATUSES,
    CheckpointRecord,
    FileRecord,
    JobError,
    JobRecord,
)

from tunery_trainer.providers import Provider
from tunery_trainer.results import RESULTS_PURPOSE

log = logging.getLogger(__name__)

# Our job id in the remote job's metadata: finds the remote job if we died before recording its id.
METADATA_KEY = "tunery_job_id"
METADATA_MAX_KEYS = 16  # OpenAI's limit; without room for our key the user's metadata wins
# Hyperparameters the provider resolves ("auto" → numbers) and we show on our job.
RESOLVED_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")
STOP_CHECK_S = 0.5  # how often a stop request is looked at between polls
MAX_BACKOFF_S = 30.0
# After the remote job ends, how long its closing event ("The job has successfully completed")
# is waited for: providers write it just after the status.
CLOSING_EVENT_WAIT_S = 60.0
PAGE_LIMIT = 100

T = TypeVar("T")


@dataclass(frozen=True)
class ManagedResult:
    """How a run ended: `stopped` when it returned on a stop request ("cancel", "pause",
    "shutdown") before the remote job ended; `status` when it wrote our job's final status."""

    stopped: str | None = None
    status: str | None = None


class ProviderUnavailable(Exception):
    """The provider did not answer (connection errors, 408/429/5xx) for the whole retry window."""


class ManagedJobFailed(Exception):
    def __init__(self, error: JobError):
        super().__init__(error.message)
        self.error = error


def make_client(provider: Provider) -> AsyncOpenAI:
    # The SDK's own retries are off: `ManagedRun._call` retries with one policy for every call.
    return AsyncOpenAI(
        base_url=provider.base_url,
        api_key=provider.api_key.get_secret_value(),
        max_retries=0,
        timeout=provider.request_timeout_s,
    )


async def run_managed_job(
    bus: Bus,
    job: JobRecord,
    provider: Provider,
    lease: Lease,
    stop_requested: Callable[[], str | None],
    *,
    client: AsyncOpenAI | None = None,
) -> ManagedResult:
    """Runs `job` (claimed under `lease`) at `provider` until it ends or a stop is requested.

    `stop_requested()` returns "cancel", "pause", "shutdown" or None, as for local training.
    The final status (succeeded, failed with the provider's error, cancelled) is written through
    the lease. On "shutdown" the remote job keeps running and the next run re-attaches to it; on
    "pause" the remote job is paused where the provider supports it; on "cancel" it is cancelled.
    """
    own_client = client is None
    run = ManagedRun(bus, job, provider, lease, stop_requested, client or make_client(provider))
    try:
        return await run.run()
    finally:
        if own_client:
            await run.client.close()


def mirrored_event_id(job_id: str, remote_event_id: str) -> str:
    """Our id of a remote event: the same on every run, so JetStream and readers de-duplicate it."""
    digest = hashlib.sha256(f"{job_id}/{remote_event_id}".encode()).hexdigest()[:24]
    return f"ftevent-{digest}"


def mirrored_file_id(job_id: str, remote_file_id: str) -> str:
    digest = hashlib.sha256(f"{job_id}/{remote_file_id}".encode()).hexdigest()[:24]
    return f"file-{digest}"


class ManagedRun:
    def __init__(
        self,
        bus: Bus,
        job: JobRecord,
        provider: Provider,
        lease: Lease,
        stop_requested: Callable[[], str | None],
        client: AsyncOpenAI,
    ):
        self.bus = bus
        self.job = job
        self.provider = provider
        self.lease = lease
        self.stop_requested = stop_requested
        self.client = client
        self.seen_events: set[str] = set()
        self.newest_remote_event = None  # as of the last poll, mirrored or not

    # --- the run, top to bottom -------------------------------------------------------------

    async def run(self) -> ManagedResult:
        try:
            self.seen_events = {event.id for event in await self.bus.read_events("job", self.job.id)}
            remote = await self._attach_or_create()
            if remote is None:
                return ManagedResult(stopped=self.stop_requested() or "cancel")
            return await self._follow(remote)
        except ManagedJobFailed as exc:
            return await self._fail(exc.error)
        except (ProviderUnavailable, openai.APIStatusError) as exc:
            return await self._fail(self._error_of(exc))

    async def _attach_or_create(self):
        """The remote job of our job: the recorded one, one found by our metadata, or a new one."""
        jobs = self.client.fine_tuning.jobs
        if self.job.provider_job_id:
            try:
                remote = await self._call(
                    "retrieving the job", lambda: jobs.retrieve(self.job.provider_job_id)
                )
            except openai.NotFoundError:
                raise ManagedJobFailed(
                    JobError(
                        code="provider_job_not_found",
                        message=f"provider {self.provider.name} no longer knows job "
                        f"{self.job.provider_job_id}",
                    )
                ) from None
            return await self._reattached(remote)
        found = await self._call("listing jobs", self._find_by_metadata)
        if found is not None:
            await self._record_provider_job_id(found.id)
            return await self._reattached(found)
        if self.stop_requested():
            return None
        return await self._create()

    async def _reattached(self, remote):
        await self._event("reattached", f"Following job {remote.id} at provider {self.provider.name} again")
        if remote.status == "paused" and not self.stop_requested():
            remote = await self._call(
                "resuming the job", lambda: self.client.fine_tuning.jobs.resume(remote.id)
            )
            await self._event("resumed", f"Job {remote.id} resumed at provider {self.provider.name}")
        return remote

    async def _find_by_metadata(self):
        try:
            page = await self.client.fine_tuning.jobs.list(
                metadata={METADATA_KEY: self.job.id}, limit=PAGE_LIMIT
            )
        except (openai.BadRequestError, openai.NotFoundError):
            return None  # a provider without the metadata filter: nothing to re-attach to
        # A provider that ignores the filter returns other jobs too: check the key ourselves.
        return next((j for j in page.data if (j.metadata or {}).get(METADATA_KEY) == self.job.id), None)

    async def _create(self):
        uploaded: list[str] = []
        try:
            training = await self._upload(self.job.training_file, "training_file")
            uploaded.append(training)
            validation = None
            if self.job.validation_file:
                validation = await self._upload(self.job.validation_file, "validation_file")
                uploaded.append(validation)
            if self.stop_requested():
                await self._delete_remote_files(uploaded)
                return None
            metadata = dict(self.job.metadata or {})
            if len(metadata) < METADATA_MAX_KEYS:
                metadata[METADATA_KEY] = self.job.id
            request: dict[str, Any] = {
                "model": self.provider.remote_model(self.job.model),
                "training_file": training,
                "seed": self.job.seed,
                "metadata": metadata,
            }
            if validation:
                request["validation_file"] = validation
            if self.job.suffix:
                request["suffix"] = self.job.suffix
            if self.job.method:
                request["method"] = self.job.method
            remote = await self._call("creating the job", self._creator(request))
        except (ProviderUnavailable, openai.APIError, ManagedJobFailed):
            await self._delete_remote_files(uploaded)
            raise
        await self._record_provider_job_id(remote.id)
        await self._event(
            "started",
            f"Fine-tuning job started at provider {self.provider.name}: {remote.id} "
            f"(model {request['model']})",
        )
        return remote

    def _creator(self, request: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        """Creates the remote job; a retry after a lost answer first looks for the job it made."""
        attempted = False

        async def create_or_find():
            nonlocal attempted
            if attempted and METADATA_KEY in request["metadata"]:
                found = await self._find_by_metadata()
                if found is not None:
                    return found
            attempted = True
            return await self.client.fine_tuning.jobs.create(**request)

        return create_or_find

    async def _follow(self, remote) -> ManagedResult:
        """Polls the remote job and mirrors it until it ends or a stop is requested."""
        jobs = self.client.fine_tuning.jobs
        ended_at: float | None = None
        while True:
            new_events = await self._mirror_events(remote.id)
            stop = self._stop(await self._mirror_record(remote))
            if stop == "cancel":
                await self._cancel_remote(remote)
                return ManagedResult(stopped="cancel")
            if remote.status in FINAL_STATUSES:
                ended_at = ended_at or time.monotonic()
                newest = self.newest_remote_event
                closing = (
                    newest is not None
                    and newest.type != "metrics"
                    and newest.created_at >= (remote.finished_at or 0)
                )
                # Done once the closing event is the newest and a further poll brought nothing new
                # (or at once when asked to stop: the job is over, only its last event may be late).
                waited = time.monotonic() - ended_at
                if (closing and not new_events) or stop is not None or waited > CLOSING_EVENT_WAIT_S:
                    return await self._finish(remote)
                await asyncio.sleep(self.provider.poll_interval_s)
            elif stop == "pause":
                await self._pause_remote(remote)
                return ManagedResult(stopped="pause")
            elif stop is not None:  # shutdown: the remote job runs on; the next run re-attaches
                return ManagedResult(stopped=stop)
            else:
                await self._wait(self.provider.poll_interval_s)
            remote = await self._call("retrieving the job", lambda r=remote: jobs.retrieve(r.id))

    def _stop(self, record: JobRecord | None) -> str | None:
        """The stop asked for, through the worker or seen on our record itself (a record gone or
        cancelled is a cancel, which overrides the others)."""
        if record is None or record.status == "cancelled":
            return "cancel"
        asked = self.stop_requested()
        if asked is None and record.status == "paused":
            return "pause"
        return asked

    # --- mirroring ------------------------------------------------------------------------------

    async def _mirror_events(self, remote_id: str) -> list:
        """Publishes the remote events we have not published yet, oldest first; returns them."""

        async def new_events():
            found = []
            self.newest_remote_event = None
            # Newest first: everything after the first one we know is already ours.
            async for event in self.client.fine_tuning.jobs.list_events(remote_id, limit=PAGE_LIMIT):
                self.newest_remote_event = self.newest_remote_event or event
                if mirrored_event_id(self.job.id, event.id) in self.seen_events:
                    break
                found.append(event)
            return list(reversed(found))

        events = await self._call("listing events", new_events)
        for remote_event in events:
            data = remote_event.data if isinstance(remote_event.data, dict) and remote_event.data else None
            kind = remote_event.type or ("metrics" if data else "message")
            event = make_event(
                "job",
                self.job.id,
                self.job.org,
                "metrics" if kind == "metrics" else "provider_reported",
                remote_event.message,
                level=remote_event.level if remote_event.level in ("info", "warn", "error") else "info",
                data=data,
                type=kind,
            )
            event.id = mirrored_event_id(self.job.id, remote_event.id)
            event.created_at = remote_event.created_at
            await self.bus.publish_event(event)
            self.seen_events.add(event.id)
        return events

    async def _remote_checkpoints(self, remote_id: str) -> list[CheckpointRecord] | None:
        """The remote job's checkpoints, or None from a provider without checkpoints (404)."""

        async def listing():
            try:
                return [
                    c
                    async for c in self.client.fine_tuning.jobs.checkpoints.list(remote_id, limit=PAGE_LIMIT)
                ]
            except openai.NotFoundError:
                return None

        remote = await self._call("listing checkpoints", listing)
        if remote is None:
            return None
        return [
            CheckpointRecord(
                id=c.id,
                step_number=c.step_number,
                # OpenAI's checkpoints carry no epoch; 0 when the provider does not say.
                epoch=int((c.model_extra or {}).get("epoch") or 0),
                created_at=c.created_at,
                metrics={k: float(v) for k, v in c.metrics.model_dump().items() if v is not None},
                fine_tuned_model_checkpoint=c.fine_tuned_model_checkpoint,
            )
            for c in sorted(remote, key=lambda c: c.step_number)
        ]

    async def _mirror_record(self, remote) -> JobRecord | None:
        """Copies the remote figures into our record (only when they changed); our record now."""
        checkpoints = await self._remote_checkpoints(remote.id)
        resolved = _resolved_hyperparameters(remote)

        def apply(rec: JobRecord):
            if rec.is_final:
                return None
            update: dict[str, Any] = {}
            if remote.trained_tokens is not None and rec.trained_tokens != remote.trained_tokens:
                update["trained_tokens"] = remote.trained_tokens
            if rec.estimated_finish != remote.estimated_finish:
                update["estimated_finish"] = remote.estimated_finish
            if checkpoints is not None:
                merged = {c.id: c for c in rec.checkpoints} | {c.id: c for c in checkpoints}
                ordered = sorted(merged.values(), key=lambda c: c.step_number)
                if ordered != rec.checkpoints:
                    update["checkpoints"] = ordered
            method = _with_hyperparameters(rec.method, resolved)
            if method != rec.method:
                update["method"] = method
            return rec.model_copy(update=update) if update else None

        return await self.bus.jobs.mutate(self.job.org, self.job.id, apply)

    async def _copy_result_files(self, remote) -> list[str]:
        """The remote result files (metrics CSVs) as files of ours: readable through our API."""
        copied = []
        for remote_id in remote.result_files or []:
            file_id = mirrored_file_id(self.job.id, remote_id)
            try:
                info = await self._call(
                    "reading a result file", lambda i=remote_id: self.client.files.retrieve(i)
                )
                content = await self._call(
                    "reading a result file", lambda i=remote_id: self.client.files.content(i)
                )
            except (openai.APIStatusError, ProviderUnavailable) as exc:
                await self._event(
                    "result_file_skipped",
                    f"Result file {remote_id} could not be copied from provider {self.provider.name}: {exc}",
                    level="warn",
                )
                continue
            data = content.content
            record = FileRecord(
                id=file_id,
                org=self.job.org,
                bytes=len(data),
                filename=info.filename,
                purpose=RESULTS_PURPOSE,
            )
            await self.bus.put_object(record.object_name, data)
            await self.bus.files.put(self.job.org, file_id, record)
            copied.append(file_id)
        return copied

    # --- endings --------------------------------------------------------------------------------

    async def _finish(self, remote) -> ManagedResult:
        name = self.provider.name
        if remote.status == "succeeded":
            update = {
                "status": "succeeded",
                # The weights stay at the provider: its model id is the one that answers there.
                "fine_tuned_model": remote.fine_tuned_model,
                "trained_tokens": remote.trained_tokens,
                "estimated_finish": None,
                "result_files": await self._copy_result_files(remote),
            }
            if await self.lease.finish(update) is not None:
                await self._event(
                    "succeeded",
                    f"The job has successfully completed at provider {name}: {remote.fine_tuned_model}",
                )
            return ManagedResult(status="succeeded")
        if remote.status == "cancelled":
            if await self.lease.finish({"status": "cancelled", "estimated_finish": None}) is not None:
                await self._event("cancelled", f"Job {remote.id} was cancelled at provider {name}")
            return ManagedResult(status="cancelled")
        error = remote.error
        return await self._fail(
            JobError(
                code=(error.code if error and error.code else "provider_job_failed"),
                message=(
                    error.message if error and error.message else f"job {remote.id} failed at provider {name}"
                ),
                param=error.param if error else None,
            )
        )

    async def _fail(self, error: JobError) -> ManagedResult:
        if await self.lease.fail(error) is not None:
            await self._event("failed", error.message, level="error")
        return ManagedResult(status="failed")

    def _error_of(self, exc: Exception) -> JobError:
        name = self.provider.name
        if isinstance(exc, ProviderUnavailable):
            return JobError(code="provider_unavailable", message=str(exc))
        assert isinstance(exc, openai.APIStatusError)
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") or exc.message
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return JobError(
                code="provider_authentication_failed",
                message=f"provider {name} at {self.provider.base_url} rejected the API key "
                f"({exc.status_code}): {detail}",
            )
        return JobError(
            code=exc.code or "provider_request_failed",
            message=f"provider {name} refused the job ({exc.status_code}): {detail}",
            param=exc.param,
        )

    async def _cancel_remote(self, remote) -> None:
        if remote.status in FINAL_STATUSES:
            return
        try:
            await self._call("cancelling the job", lambda: self.client.fine_tuning.jobs.cancel(remote.id))
        except (openai.BadRequestError, openai.ConflictError):
            pass  # it ended meanwhile
        except (openai.APIStatusError, ProviderUnavailable) as exc:
            await self._event(
                "provider_cancel_failed",
                f"Job {remote.id} could not be cancelled at provider {self.provider.name}: {exc}",
                level="error",
            )
            return
        await self._event("provider_cancelled", f"Job {remote.id} cancelled at provider {self.provider.name}")

    async def _pause_remote(self, remote) -> None:
        try:
            await self._call("pausing the job", lambda: self.client.fine_tuning.jobs.pause(remote.id))
        except (openai.APIStatusError, ProviderUnavailable) as exc:
            # The job keeps running there; resuming ours follows it again from wherever it got to.
            await self._event(
                "provider_pause_failed",
                f"Job {remote.id} could not be paused at provider {self.provider.name}; it keeps "
                f"running there: {exc}",
                level="warn",
            )

    # --- plumbing -------------------------------------------------------------------------------

    async def _upload(self, file_id: str, param: str) -> str:
        record = await self.bus.files.get(self.job.org, file_id)
        if record is None:
            raise ManagedJobFailed(
                JobError(
                    code="file_not_found", message=f"file {file_id} was deleted before training", param=param
                )
            )
        data = await self.bus.get_object(record.object_name)
        uploaded = await self._call(
            "uploading a file",
            lambda: self.client.files.create(file=(record.filename, data), purpose="fine-tune"),
        )
        return uploaded.id

    async def _delete_remote_files(self, file_ids: list[str]) -> None:
        for file_id in file_ids:
            try:
                await self.client.files.delete(file_id)
            except openai.APIError as exc:  # best effort: an orphan file costs storage, not a job
                log.warning("could not delete file %s at provider %s: %s", file_id, self.provider.name, exc)

    async def _record_provider_job_id(self, remote_id: str) -> None:
        await self.bus.jobs.mutate(
            self.job.org, self.job.id, lambda rec: rec.model_copy(update={"provider_job_id": remote_id})
        )
        self.job = self.job.model_copy(update={"provider_job_id": remote_id})

    async def _event(self, what: str, message: str, level: str = "info") -> None:
        await self.bus.publish_event(make_event("job", self.job.id, self.job.org, what, message, level=level))

    async def _wait(self, seconds: float) -> None:
        """Sleeps until the next poll, returning early on a stop request."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.stop_requested():
            await asyncio.sleep(min(STOP_CHECK_S, left))

    async def _call(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """`op()`, retried with exponential back-off while the provider is unreachable, for at
        most `retry_for_s`; any other error (a rejected key or request) is raised at once."""
        delay = 1.0
        deadline: float | None = None
        while True:
            try:
                return await op()
            except openai.APIError as exc:
                if not _is_transient(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.provider.retry_for_s
                if now >= deadline:
                    raise ProviderUnavailable(
                        f"provider {self.provider.name} at {self.provider.base_url} did not answer "
                        f"({what}) for {self.provider.retry_for_s:g} s: {exc}"
                    ) from exc
                log.warning("provider %s: %s failed (%s); retrying", self.provider.name, what, exc)
                await asyncio.sleep(min(delay, deadline - now))
                delay = min(delay * 2, MAX_BACKOFF_S)


def _is_transient(exc: openai.APIError) -> bool:
    if isinstance(exc, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code == 408


def _resolved_hyperparameters(remote) -> dict[str, Any]:
    """The numbers the provider resolved "auto" to, from its method (or legacy hyperparameters)."""
    method = remote.method
    section = getattr(method, method.type, None) if method is not None else None
    source = getattr(section, "hyperparameters", None) or remote.hyperparameters
    values = source.model_dump() if source is not None else {}
    return {k: values[k] for k in RESOLVED_KEYS if isinstance(values.get(k), int | float)}


def _with_hyperparameters(method: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    if not resolved:
        return method
    kind = method.get("type", "supervised")
    section = dict(method.get(kind) or {})
    hyperparameters = {**(section.get("hyperparameters") or {}), **resolved}
    return {**method, "type": kind, kind: {**section, "hyperparameters": hyperparameters}}
