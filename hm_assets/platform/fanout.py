"""Customer-shard fan-out: a per-customer asset as one Dagster step per customer shard.

A sharded asset is a small graph of steps:

- ``<asset>_plan`` splits the week's customers into contiguous key ranges (``hm_assets/platform/shards.py``)
  and computes once what every shard shares (e.g. the cap's calibration);
- ``<asset>_shard[shard_<n>]`` (a dynamic step per range) writes that range's part files;
- ``<asset>_combine`` concatenates the parts in key order into the week's files (each replaced
  atomically, so readers never see half a week) and reports the metadata.

The executor decides where shards run: the in-process executor one after another, the
multiprocess executor in parallel processes, a cluster executor (``k8s_job_executor``,
``celery_executor``) on different nodes sharing the store. Any shard size gives the same rows in
the same order (``test_pipeline.py::test_customer_shards_give_the_same_results_as_one_shard``,
``test_postgres_instance.py``, ``test_object_store.py``, ``test_celery.py``).

What the steps hand each other (the shard work orders, the shards' counts) goes through the
store's handoff IO manager (``hm_assets/platform/handoff.py``), bound to the asset itself: with an
object store it reaches a step on any node, so no step depends on a disk another step wrote.

A shard step that fails, or whose worker is lost (a killed process, a lost node: the executor
reports it, ``hm_assets/platform/celery_executor.py``), is run again once (``SHARD_RETRY_POLICY``).
"""


import dataclasses
import pickle
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from hm_assets.platform.beta_apis import beta_apis
from hm_assets.platform.parquet_concat import UnsupportedParquet, concatenate_parquet
from hm_assets.platform.handoff import HANDOFF_IO_MANAGER_KEY, handoff_io_manager, remove_handoffs
from hm_assets.platform.store import HMStore
from hm_assets.platform.progress import Progress, duration
from hm_assets.platform.shards import CustomerShard, customer_shards
from hm_assets.platform.store import ParquetAppender


# Every shard step (a DuckDB of up to HMStore.duckdb_memory_limit) takes a slot of this pool: the
# instance's pool limit (dagster.yaml `concurrency.pools`, or `dagster instance concurrency set`)
# bounds how many run at once across all runs — on one machine, its memory.
SHARD_POOL = "hm-customer-shards"

# A shard step writes only its own part files (atomically), so running it again is safe: once more
# after a failure, or after its worker was lost mid-shard.
SHARD_RETRY_POLICY = dg.RetryPolicy(max_retries=1, delay=2)


class NoConfig(dg.Config):
    """For sharded assets without settings of their own."""


@dataclass(frozen=True)
class ShardTask:
    """One shard step's work order: its key range, where its parts go, and what ``prepare``
    computed for every shard (read from the plan record by the shard step itself).

    The plan step hands ``parts_dir`` over relative to the store's root (each node has a root of
    its own: HM_HOME, its cache of the object store); the shard step gives ``run_shard`` the task
    with the folder under its own root."""

    shard: CustomerShard
    parts_dir: str
    shared: Any = None

    def part(self, output: str, suffix: str) -> Path:
        return part_path(Path(self.parts_dir), output, self.shard.index, suffix)


def part_path(parts_dir: Path, output: str, shard_index: int, suffix: str) -> Path:
    return parts_dir / f"{output}-{shard_index:05d}{suffix}"


def parts_dir_of(store: HMStore, asset: str, context: dg.OpExecutionContext) -> Path:
    """Where one run's shard parts of one asset and week wait to be combined: in the store, so a
    combine step on another node finds them through the object store."""
    return store.root / "parts" / f"{asset}-{context.partition_key}-{context.run_id[:8]}"


@dataclass(frozen=True)
class ShardOutputs:
    """The files a sharded asset writes per week: output name -> (store asset name, suffix).
    The first is the asset's own Parquet file; CSV outputs are concatenated with one header."""

    files: Mapping[str, str] = field(default_factory=dict)

    def final_paths(self, store: HMStore, week: str) -> dict[str, Path]:
        return {name: store.asset_path(name, week, suffix) for name, suffix in self.files.items()}


PrepareFn = Callable[[dg.OpExecutionContext, HMStore, dg.Config], Any]
ShardFn = Callable[[dg.OpExecutionContext, HMStore, dg.Config, ShardTask], dict]
FinishFn = Callable[[dg.OpExecutionContext, HMStore, dg.Config, list[dict], dict[str, Path], Any], dict]
PLAN_RECORD = "plan.pickle"


def read_plan_record(store: HMStore, parts_dir: Path) -> dict:
    """What the plan step left for the shard and combine steps: its start time and ``prepare``'s result."""
    return pickle.loads(store.fetch(parts_dir / PLAN_RECORD).read_bytes())


def week_customer_shards(store: HMStore, customers_per_shard: int) -> list[CustomerShard]:
    con = store.connect()
    try:
        con.execute(f"CREATE VIEW customers AS SELECT customer_key FROM read_parquet('{store.require('customers')}')")
        return customer_shards(con, customers_per_shard)
    finally:
        con.close()


def combine_parts(
    store: HMStore,
    parts_dir: Path,
    shard_indices: Sequence[int],
    outputs: ShardOutputs,
    finals: dict[str, Path],
    log: Callable[[str], None] | None = None,
) -> None:
    """Concatenate every output's parts in shard order into its final file (progress to ``log``)."""
    progress = Progress("combining shard parts", len(outputs.files) * len(shard_indices), log, "parts")
    for name, suffix in outputs.files.items():
        parts = [store.fetch(part_path(parts_dir, name, index, suffix)) for index in sorted(shard_indices)]
        missing = [str(p) for p in parts if not p.exists()]
        if missing:
            raise FileNotFoundError(f"shard parts of '{name}' are missing: {missing[:3]}")
        if suffix == ".csv":
            with store.atomic_path(finals[name]) as temporary, temporary.open("wb") as out:
                for part in parts:
                    with part.open("rb") as handle:
                        shutil.copyfileobj(handle, out)
                    progress.advance()
        elif len(parts) == 1:
            with store.atomic_path(finals[name]) as temporary:
                shutil.copyfile(parts[0], temporary)
            progress.advance()
        else:
            with store.atomic_path(finals[name]) as temporary:
                try:
                    with temporary.open("wb") as out:
                        concatenate_parquet(parts, out)
                    progress.advance(len(parts))
                except UnsupportedParquet as refused:
                    if log is not None:
                        log(f"'{name}': its parts' row groups decoded and written again ({refused})")
                    copy_row_groups(parts, temporary, progress)
    progress.finish()


def copy_row_groups(parts: Sequence[Path], target: Path, progress: Progress) -> None:
    """The parts' row groups read and written again into ``target``, cast to the first part's schema:
    for parts whose bytes ``concatenate_parquet`` cannot take as they are."""
    appender = ParquetAppender(target)
    try:
        for part in parts:
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                appender.append(source.read_row_group(group))
            progress.advance()
    finally:
        appender.close()
    if appender.writer is None:  # every shard empty: keep the schema
        shutil.copyfile(parts[0], target)


def shard_progress(name: str, task: ShardTask, seconds: float, since_plan: float, outputs: ShardOutputs) -> str:
    """``name`` shard i of n done, how many are done (their parts in this machine's store) and the
    time left at the rate so far (which counts shards running at once)."""
    first, suffix = next(iter(outputs.files.items()))
    done = max(1, len(list(Path(task.parts_dir).glob(f"{first}-*{suffix}"))))
    total = task.shard.count
    left = f", about {duration((total - done) * since_plan / done)} left" if done < total else ""
    return (
        f"{name}: shard {task.shard.index + 1} of {total} in {seconds:.1f} s; {done} of {total} shards done "
        f"in {duration(since_plan)}{left}"
    )


def sharded_asset(
    *,
    name: str,
    description: str,
    deps: Sequence[dg.AssetDep | dg.AssetsDefinition | str],
    outputs: ShardOutputs,
    run_shard: ShardFn,
    finish: FinishFn,
    prepare: PrepareFn | None = None,
    config_class: type[dg.Config] = NoConfig,
    shard_size: Callable[[HMStore], int] = lambda store: store.customers_per_shard,
    group_name: str,
    kinds: set[str],
    partitions_def: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    """A weekly asset computed as plan -> one step per customer shard -> combine."""
    # One Nothing input per upstream asset: they order the steps and carry no data.
    ins = {}
    for dep in deps:
        if isinstance(dep, (dg.AssetsDefinition, str)):
            key = dep.key if isinstance(dep, dg.AssetsDefinition) else dg.AssetKey(dep)
            ins[key.to_python_identifier()] = dg.AssetIn(key, dagster_type=dg.Nothing)
        else:
            ins[dep.asset_key.to_python_identifier()] = dg.AssetIn(
                dep.asset_key, dagster_type=dg.Nothing, partition_mapping=dep.partition_mapping
            )

    @dg.op(
        name=f"{name}_plan",
        out=dg.DynamicOut(ShardTask, io_manager_key=HANDOFF_IO_MANAGER_KEY),
        ins={input_name: dg.In(dg.Nothing) for input_name in ins},
    )
    def plan(context: dg.OpExecutionContext, store: HMStore, config: config_class):  # type: ignore[valid-type]
        shards = week_customer_shards(store, shard_size(store))
        parts_dir = parts_dir_of(store, name, context)
        for leftover in parts_dir.parent.glob(f"{name}-{context.partition_key}-*"):  # of failed runs
            store.remove(leftover)
        parts_dir.mkdir(parents=True)
        shared = prepare(context, store, config) if prepare is not None else None
        with store.atomic_path(parts_dir / PLAN_RECORD) as temporary:
            temporary.write_bytes(pickle.dumps({"started": time.time(), "shared": shared}))
        context.log.info(f"{len(shards)} customer shard(s) of about {shard_size(store):,} customers")
        for shard in shards:
            yield dg.DynamicOutput(ShardTask(shard, store.relative(parts_dir)), mapping_key=f"shard_{shard.index:05d}")

    @dg.op(
        name=f"{name}_shard",
        out=dg.Out(dict, io_manager_key=HANDOFF_IO_MANAGER_KEY),
        pool=SHARD_POOL,
        retry_policy=SHARD_RETRY_POLICY,
    )
    def shard_step(context: dg.OpExecutionContext, store: HMStore, config: config_class, task: ShardTask) -> dict:  # type: ignore[valid-type]
        started = time.perf_counter()
        parts_dir = store.root / task.parts_dir  # the plan's folder, under this node's root
        record = read_plan_record(store, parts_dir)
        task = dataclasses.replace(task, parts_dir=str(parts_dir), shared=record["shared"])
        summary = run_shard(context, store, config, task)
        seconds = time.perf_counter() - started
        context.log.info(shard_progress(name, task, seconds, time.time() - record["started"], outputs))
        return {**summary, "shard": task.shard.index, "seconds": seconds}

    @dg.op(name=f"{name}_combine", out=dg.Out(dg.Nothing))
    def combine(context: dg.OpExecutionContext, store: HMStore, config: config_class, summaries: list[dict]):  # type: ignore[valid-type]
        summaries = sorted(summaries, key=lambda s: s["shard"])
        parts_dir = parts_dir_of(store, name, context)
        finals = outputs.final_paths(store, context.partition_key)
        plan_record = read_plan_record(store, parts_dir)
        combine_parts(store, parts_dir, [s["shard"] for s in summaries], outputs, finals, context.log.info)
        metadata = finish(context, store, config, summaries, finals, plan_record["shared"])
        store.remove(parts_dir)
        remove_handoffs(store, context.run_id, name)
        context.add_output_metadata(
            {
                **metadata,
                "customer_shards": len(summaries),
                "seconds": round(time.time() - plan_record["started"], 2),
                "shard_seconds_total": round(sum(s["seconds"] for s in summaries), 2),
                "shard_seconds_max": round(max((s["seconds"] for s in summaries), default=0.0), 2),
            }
        )

    def map_config(config: config_class) -> dict:  # type: ignore[valid-type]
        # Dagster hands over the validated config as the class, or as a dict when none was given.
        values = {"config": config.model_dump() if isinstance(config, dg.Config) else dict(config)}
        return {plan.name: values, shard_step.name: values, combine.name: values}

    def compose(**upstream):
        tasks = plan(**upstream)
        return combine(tasks.map(shard_step).collect())

    with beta_apis():  # resource_defs on a graph asset
        return dg.graph_asset(
            compose,
            name=name,
            description=description,
            ins=ins,
            config=dg.ConfigMapping(config_fn=map_config),
            group_name=group_name,
            kinds=kinds,
            partitions_def=partitions_def,
            # One IO manager object for every sharded asset (Dagster requires the same definition per key).
            resource_defs={HANDOFF_IO_MANAGER_KEY: handoff_io_manager},
        )
