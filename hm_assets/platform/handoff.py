"""The small values steps hand each other (a shard's work order, a shard's counts), kept in the store.

Dagster passes an op's outputs to the ops downstream through an IO manager. The default one writes
pickles under the instance's local storage folder, which only works while every step of a run sees
the same disk (one machine, or one run pod with the multiprocess executor). The customer-shard
fan-out (``hm_assets/platform/fanout.py``) hands its values over through this IO manager instead: a
pickle per output under ``HM_HOME/handoff/<run id>/<asset>/<op>/...`` (``handoff_path``),
written through ``HMStore.atomic_path`` and read through ``HMStore.fetch``. With an object store
(``HM_OBJECT_STORE``) ``handoff/`` is shared like ``assets/`` and ``parts/``, so a step finds its
inputs wherever the step before it ran: another Celery worker (``celery_executor``), another pod
(``k8s_job_executor``). The combine step of a sharded asset removes its asset's folder when it is
done (``remove_handoffs``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import dagster as dg

from hm_assets.platform.store import HMStore

HANDOFF_FOLDER = "handoff"
HANDOFF_IO_MANAGER_KEY = "hm_handoff_io_manager"


def handoff_root(store: HMStore, run_id: str, asset: str) -> Path:
    """Where one run's handed-over values of one (sharded) asset's steps live."""
    return store.root / HANDOFF_FOLDER / run_id / asset


def handoff_path(store: HMStore, run_id: str, step_key: str, name: str, mapping_key: str | None) -> Path:
    """``<asset>/<op>[/<step's mapping key>]/<output>[/<output's mapping key>].pickle``: a graph
    asset's step keys are ``<asset>.<op>[<mapping key>]``. No brackets in the path: object-store
    clients (fsspec) read them as glob patterns."""
    asset, _, op = step_key.partition(".")
    op, _, step_mapping = (op or asset).removesuffix("]").partition("[")
    folder = handoff_root(store, run_id, asset) / op
    if step_mapping:
        folder = folder / step_mapping
    return folder / name / f"{mapping_key}.pickle" if mapping_key else folder / f"{name}.pickle"


def remove_handoffs(store: HMStore, run_id: str, asset: str) -> None:
    """Delete what ``asset``'s steps handed over in run ``run_id`` (here and on the object store),
    and the run's local folder once it is empty."""
    root = handoff_root(store, run_id, asset)
    store.remove(root)
    try:
        root.parent.rmdir()
    except OSError:  # another asset's values are still there, or there never was a local folder
        pass


class HandoffIOManager(dg.IOManager):
    """Pickles through the run's ``HMStore`` (and so through its object store, when it has one)."""

    def __init__(self, store: HMStore) -> None:
        self.store = store

    def _path(self, context: dg.OutputContext) -> Path:
        if context.run_id is None or context.step_key is None:
            raise dg.DagsterInvariantViolationError("handoff values belong to a step of a run")
        return handoff_path(self.store, context.run_id, context.step_key, context.name, context.mapping_key)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        with self.store.atomic_path(self._path(context)) as temporary:
            temporary.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def load_input(self, context: dg.InputContext) -> Any:
        path = self.store.fetch(self._path(context.upstream_output))
        if not path.exists():
            raise FileNotFoundError(
                f"the value step {context.upstream_output.step_key} handed over is missing: {path} "
                "(written by another node? then HM_OBJECT_STORE must be the same on every node)"
            )
        return pickle.loads(path.read_bytes())


@dg.io_manager(
    required_resource_keys={"store"},
    description="Values handed between steps, as pickles under HM_HOME/handoff/ (shared through the object store).",
)
def handoff_io_manager(init_context: dg.InitResourceContext) -> HandoffIOManager:
    return HandoffIOManager(init_context.resources.store)
