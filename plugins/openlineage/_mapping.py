"""From Slipstream events to OpenLineage RunEvents: a pure mapping, apart from the fold it keeps.

Each node attempt is one OpenLineage run, each execution another, its parent:

===================================  =============================================================
Slipstream event                     OpenLineage RunEvent
===================================  =============================================================
``ExecutionStarted``                 START of the execution's run (job ``<workflow>``)
``ExecutionSucceeded`` / ``Failed``  COMPLETE / FAIL of it (``errorMessage`` facet on FAIL)
``ExecutionAborted``                 ABORT of it
``NodeRunning``                      START of the attempt's run (job ``<workflow>.<node_id>``)
``ArrayExpanded``, or ``NodeQueued``  START of a map's, or a subworkflow node's, run (they have no
of a subworkflow node                ``NodeRunning``: their children run)
``NodeSucceeded``                    COMPLETE of the attempt's run
``NodeFailed``                       FAIL of the attempt's run, with the error
``ChunkFinished``                    COMPLETE of a chunk of map elements (FAIL if any element failed)
===================================  =============================================================

- Job namespace ``<project>.<domain>``; job name ``<workflow>.<node_id>``, where a map element
  (``map/17``) or a chunk of elements (``map/c2``) is a run of its map's job (``<workflow>.map``).
- Run ids are stable UUIDs (version 5) of ``(execution_id, node_id, attempt)``, and of the
  execution id for the execution's run, so re-emitting an event after a restart names the same
  run. Every node run carries the ``parent`` facet (the execution's run and job, also its root)
  and a ``tags`` facet with the execution id, node id and attempt.
- ``NodeFailed``: each attempt is its own run, so a failed attempt's run ends in FAIL whether or
  not the node is retried (the spec wants one terminal event per run; Airflow's integration does
  the same per try). The ``tags`` facet says whether the failure was final (``final=true``), as
  the fold of the execution decides (retry budgets, retryable errors).
- Datasets: the COMPLETE of a node run lists the catalog artifacts the run consumed (inputs) and
  produced (outputs), from the catalog's lineage edges, when the run has any (its task is cached
  or published, or it read a cached node's outputs; see `lineage_wanted`). A catalog ``Dataset``
  (a task's memoized outputs) is an OpenLineage dataset named ``<task>`` in the namespace of the
  artifact's ``<project>.<domain>``; the artifact is its version (``version`` facet), its output
  names the ``schema`` facet's fields, and a published artifact's name and partitions its
  ``tags``. A chunk of map elements lists none: a map's elements are thousands of artifacts, and
  the catalog keeps their edges for ``catalog lineage``.

`LineageMapper` folds each open execution (`engine.state.ExecutionState`) to know the workflow,
the project and whether a failure is final. An execution first seen in the middle (the consumer
started late, or forgot it) needs its earlier events: `needs_history` says so, and the caller
`load`s them from the store.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidTransition
from engine.events import (
    AnyEvent,
    ArrayExpanded,
    ChunkFinished,
    ExecutionAborted,
    ExecutionCreated,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeFailed,
    NodeQueued,
    NodeRunning,
    NodeSucceeded,
)
from engine.interfaces import Artifact
from engine.models import ArrayNode, ErrorInfo, InputBinding, OutputRef, SubworkflowNode
from engine.state import ExecutionState, NodeState, PlannerMarks, binding_leaves

__all__ = ["RUN_ID_NAMESPACE", "LineageMapper", "LineageWanted", "RunLineage", "execution_run_id", "node_run_id"]

log = logging.getLogger("slipstream.openlineage")

# the namespace of Slipstream's run ids (uuid5); fixed forever, or run ids change
RUN_ID_NAMESPACE = uuid.UUID("6f1c2a6e-3b1d-5e0a-9a61-5c1b0f3a7d42")
# executions folded at once; the oldest is dropped beyond it (and folded again from the store if it moves)
_MAX_OPEN = 10_000


def execution_run_id(execution_id: str) -> str:
    """The OpenLineage run id of an execution."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, execution_id))


def node_run_id(execution_id: str, node_id: str, attempt: int) -> str:
    """The OpenLineage run id of one attempt of a node."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{execution_id}/{node_id}/{attempt}"))


@dataclass(frozen=True, slots=True)
class RunLineage:
    """The catalog artifacts one node run consumed and produced (what its COMPLETE lists)."""

    inputs: list[Artifact]
    outputs: list[Artifact]


@dataclass(frozen=True, slots=True)
class LineageWanted:
    """A node run whose COMPLETE should list datasets: which run, and whether the catalog must
    hold edges for it (so that a reader finding none yet should wait for the catalog's writer)."""

    node_id: str
    attempt: int
    expected: bool


@dataclass(frozen=True, slots=True)
class _Run:
    """What one RunEvent says, before it becomes an openlineage-python object."""

    state: str  # START, COMPLETE, FAIL, ABORT
    run_id: str
    job: str
    node_id: str = ""  # "" for the execution's own run
    attempt: int = 0
    error: ErrorInfo | None = None
    final: bool | None = None  # of a FAIL: whether the node is done failing


class LineageMapper:
    """Turns events into OpenLineage RunEvents (``openlineage.client.event_v2.RunEvent``).

    Args:
        producer: the URI RunEvents and facets name as their producer.
        max_open: executions kept folded at once.
    """

    def __init__(self, producer: str, max_open: int = _MAX_OPEN) -> None:
        self.producer = producer
        self._max_open = max_open
        self._states: dict[str, ExecutionState] = {}

    def needs_history(self, event: AnyEvent) -> bool:
        """Whether `load` must be given the execution's events before ``event`` first."""
        state = self._states.get(event.execution_id)
        return event.version > (1 if state is None else state.version + 1)

    def load(self, execution_id: str, events: list[AnyEvent]) -> None:
        """Fold the execution's earlier events (versions 1... in order)."""
        self._states.pop(execution_id, None)
        if events:
            try:
                self._keep(execution_id, self._settled(ExecutionState.fold(events)))
            except InvalidTransition:
                log.exception("the log of execution %s does not fold; no lineage for it", execution_id)

    def lineage_wanted(self, event: AnyEvent) -> LineageWanted | None:
        """Whether ``event`` (not folded yet) completes a node run whose RunEvent lists datasets,
        and whether the catalog is expected to hold that run's edges.

        Expected: the node's task is cached or published (its outputs are an artifact), or one of
        its inputs came from a cached or published node or from the catalog at launch (it
        consumed one). The engine that ran it may have had caching off, so "expected" only bounds
        how long a reader waits for edges that the catalog's writer records after the commit.
        """
        if not isinstance(event, NodeSucceeded):
            return None
        state = self._states.get(event.execution_id)
        if state is None or event.version != state.version + 1:
            return None
        node = state.nodes.get(event.node_id)
        if node is None or (isinstance(node.spec, ArrayNode) and node.array_parent is None):
            return None  # a map as a whole: its elements' runs carry the artifacts
        return LineageWanted(event.node_id, event.attempt, _expects_edges(state, node))

    def map(self, event: AnyEvent, lineage: RunLineage | None = None) -> list[Any]:
        """The RunEvents for ``event`` (none for most kinds), after folding it; ``lineage`` is
        what the node run that ``event`` completes consumed and produced (see `lineage_wanted`).

        An event already folded (delivered again) gives none; so does one of an execution whose
        earlier events are missing (see `needs_history`).
        """
        state = self._states.get(event.execution_id)
        if state is None:
            if not isinstance(event, ExecutionCreated):
                return []
            state = ExecutionState()
        if event.version != state.version + 1:
            return []
        try:
            state.apply(event)
        except InvalidTransition:
            log.exception(
                "event %s of execution %s does not fold; no lineage for it", event.version, event.execution_id
            )
            self._states.pop(event.execution_id, None)
            return []
        self._keep(event.execution_id, self._settled(state))
        runs = self._runs(state, event)
        if state.is_terminal:
            del self._states[event.execution_id]
        return [self._run_event(state, event, run, lineage if run.node_id else None) for run in runs]

    def _keep(self, execution_id: str, state: ExecutionState) -> None:
        self._states.pop(execution_id, None)
        self._states[execution_id] = state  # last touched last: the first is the oldest
        if len(self._states) > self._max_open:
            del self._states[next(iter(self._states))]

    @staticmethod
    def _settled(state: ExecutionState) -> ExecutionState:
        state.marks = PlannerMarks()  # the planner's to-do list: nobody here drains it
        return state

    # -- which runs --------------------------------------------------------------------------------

    def _runs(self, state: ExecutionState, event: AnyEvent) -> list[_Run]:
        workflow = state.spec.name
        match event:
            case ExecutionStarted():
                return [_Run("START", execution_run_id(event.execution_id), workflow)]
            case ExecutionSucceeded():
                return [_Run("COMPLETE", execution_run_id(event.execution_id), workflow)]
            case ExecutionFailed():
                return [_Run("FAIL", execution_run_id(event.execution_id), workflow, error=event.error)]
            case ExecutionAborted():
                return [_Run("ABORT", execution_run_id(event.execution_id), workflow)]
            case NodeRunning() | ArrayExpanded():
                return [self._node_run("START", state, event.node_id)]
            case NodeQueued() if isinstance(getattr(state.nodes.get(event.node_id), "spec", None), SubworkflowNode):
                return [self._node_run("START", state, event.node_id)]
            case NodeSucceeded():
                return [self._node_run("COMPLETE", state, event.node_id)]
            case NodeFailed():
                node = state.nodes.get(event.node_id)
                final = node is None or node.phase != "retrying"
                return [self._node_run("FAIL", state, event.node_id, event.error, final)]
            case ChunkFinished():
                failed = [result.error for result in event.results if result.error is not None]
                if failed:
                    return [self._node_run("FAIL", state, event.node_id, failed[0])]
                return [self._node_run("COMPLETE", state, event.node_id)]
            case _:
                return []

    def _node_run(
        self,
        state: str,
        execution: ExecutionState,
        node_id: str,
        error: ErrorInfo | None = None,
        final: bool | None = None,
    ) -> _Run:
        node = execution.nodes.get(node_id)
        attempt = node.attempt if node is not None else 0
        job_node = node_id
        if node is not None and node.array_parent is not None:
            job_node = node.array_parent  # a map element runs its map's task
        elif node is not None and getattr(node, "chunk", None) is not None:
            job_node = node_id.rpartition("/")[0]  # a chunk of elements, likewise
        return _Run(
            state,
            node_run_id(execution.execution_id, node_id, attempt),
            f"{execution.spec.name}.{job_node}",
            node_id,
            attempt,
            error,
            final,
        )

    # -- openlineage-python objects ------------------------------------------------------------------

    def _run_event(self, execution: ExecutionState, event: AnyEvent, run: _Run, lineage: RunLineage | None) -> Any:
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run, job_type_job, parent_run, tags_run

        created = execution.created
        assert created is not None
        namespace = f"{created.project}.{created.domain}"
        producer = self.producer
        run_facets: dict[str, Any] = {}
        if run.node_id:
            parent_job = {"namespace": namespace, "name": created.workflow}
            parent_run_id = execution_run_id(event.execution_id)
            run_facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=parent_run_id),
                job=parent_run.Job(**parent_job),
                root=parent_run.Root(run=parent_run.RootRun(runId=parent_run_id), job=parent_run.RootJob(**parent_job)),
                producer=producer,
            )
            tags = {"executionId": event.execution_id, "nodeId": run.node_id, "attempt": str(run.attempt)}
            if run.final is not None:
                tags["final"] = str(run.final).lower()
            run_facets["tags"] = tags_run.TagsRunFacet(
                tags=[tags_run.TagsRunFacetFields(key, value, "SLIPSTREAM") for key, value in tags.items()],
                producer=producer,
            )
        if run.error is not None:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"{run.error.kind} error: {run.error.message}",
                programmingLanguage="python",
                stackTrace=run.error.traceback or None,
                producer=producer,
            )
        job_facets = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH",
                integration="SLIPSTREAM",
                jobType="TASK" if run.node_id else "WORKFLOW",
                producer=producer,
            )
        }
        return RunEvent(
            eventType=RunState(run.state),
            eventTime=event.at.isoformat(),
            run=Run(runId=run.run_id, facets=run_facets),
            job=Job(namespace=namespace, name=run.job, facets=job_facets),
            inputs=[InputDataset(**self._dataset(a)) for a in lineage.inputs] if lineage else [],
            outputs=[OutputDataset(**self._dataset(a)) for a in lineage.outputs] if lineage else [],
            producer=producer,
        )

    def _dataset(self, artifact: Artifact) -> dict[str, Any]:
        """The OpenLineage dataset of a catalog artifact: its catalog dataset, at its version."""
        from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset, tags_dataset

        producer = self.producer
        dataset = artifact.dataset
        facets: dict[str, Any] = {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=artifact.id, producer=producer
            ),
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[schema_dataset.SchemaDatasetFacetFields(name=name) for name in sorted(artifact.outputs)],
                producer=producer,
            ),
        }
        tags = [("cacheVersion", dataset.version), *(("name", name) for name in artifact.tags)]
        tags += [(f"partition.{key}", value) for key, value in sorted(artifact.partitions.items())]
        facets["tags"] = tags_dataset.TagsDatasetFacet(
            tags=[tags_dataset.TagsDatasetFacetFields(key, value, "SLIPSTREAM") for key, value in tags],
            producer=producer,
        )
        return {"namespace": f"{dataset.project}.{dataset.domain}", "name": dataset.name, "facets": facets}


def _expects_edges(state: ExecutionState, node: NodeState) -> bool:
    """Whether the catalog records lineage for a succeeded run of ``node`` (see `lineage_wanted`)."""
    if node.options.cache or node.options.publish:
        return True
    scope = node.scope
    if scope is None:
        return False
    created = state.created
    launched_with = created.artifacts if created is not None and scope.owner is None else {}
    for binding in node.spec.inputs.values():
        for leaf in binding_leaves(binding):
            if isinstance(leaf, OutputRef):
                upstream = state.nodes.get(scope.prefix + leaf.node)
                if upstream is None or isinstance(upstream.spec, ArrayNode):
                    continue
                if upstream.source.startswith("cache:") or upstream.options.cache or upstream.options.publish:
                    return True
            elif isinstance(leaf, InputBinding) and leaf.name in launched_with:
                return True
    return False
