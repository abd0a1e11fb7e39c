"""Reliability guards: clear errors when a memory budget is too small, and what interrupted runs leave.

Memory budgets
- DuckDB: every step's connection gets ``HMStore.duckdb_memory_limit``. When a query needs more,
  DuckDB raises ``OutOfMemoryException``; ``raise_if_out_of_memory`` turns it into a
  ``ResourceBudgetError`` that names the setting, its value and how to raise it (``history.WeekView``
  and ``data_contract.load_csv`` call it, so a budget problem is never reported as bad input).
- The whole process: ``process_memory_budget`` caps the address space (``RLIMIT_AS``) at a configured
  value (``HM_MEMORY_BUDGET``, e.g. ``12GB``) so an oversized step fails with a ``ResourceBudgetError``
  naming the budget instead of being killed by the kernel's OOM killer.

Interrupted runs
- Every output is written to a temporary sibling ``.<name>.tmp-<pid>-<8 hex>`` and renamed into
  place (``HMStore.atomic_path``). A run killed with SIGKILL leaves its temporary behind; readers never
  look at such names. ``stale_temporaries`` / ``remove_stale_temporaries`` find and delete the ones
  whose writing process is gone (and DuckDB spill folders ``tmp/duckdb-<pid>-*`` of dead processes).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

DUCKDB_BUDGET_SETTING = "HMStore.duckdb_memory_limit"
PROCESS_BUDGET_ENV = "HM_MEMORY_BUDGET"


class ResourceBudgetError(MemoryError):
    """A step needed more memory than its configured budget allows."""

    def __init__(self, message: str, setting: str, budget: str | None):
        super().__init__(message)
        self.setting = setting
        self.budget = budget


# --- DuckDB's memory budget ----------------------------------------------------------------------


def duckdb_memory_limit(con: duckdb.DuckDBPyConnection) -> str | None:
    """The connection's memory_limit as DuckDB reports it (e.g. '976.5 KiB'), or None."""
    try:
        return str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    except Exception:  # a broken connection must not hide the original error
        return None


def duckdb_budget_error(exc: BaseException, budget: str | None) -> ResourceBudgetError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    shown = repr(budget) if budget else "(its configured value)"
    message = (
        f"DuckDB ran out of its memory budget: {DUCKDB_BUDGET_SETTING} = {shown} is too small for this step "
        f"[{detail}]. Raise it, e.g. in the run config: resources: {{store: {{config: {{duckdb_memory_limit: "
        f"'8GB'}}}}}} (or HMStore(duckdb_memory_limit='8GB') in the Definitions), or lower "
        f"HMStore.duckdb_threads; DuckDB spills to HM_HOME/tmp only where an operator can spill."
    )
    return ResourceBudgetError(message, DUCKDB_BUDGET_SETTING, budget)


def raise_if_out_of_memory(
    exc: BaseException | None, budget: str | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> None:
    """If ``exc`` is DuckDB running out of memory, raise a ResourceBudgetError naming the budget."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        if budget is None and con is not None:
            budget = duckdb_memory_limit(con)
        raise duckdb_budget_error(exc, budget) from exc


@contextmanager
def duckdb_memory_guard(budget: str | None = None) -> Iterator[None]:
    """Translate DuckDB's OutOfMemoryException raised inside the block (see raise_if_out_of_memory)."""
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        raise duckdb_budget_error(exc, budget) from exc


# --- the process's memory budget -----------------------------------------------------------------

_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
    "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40,
}


def parse_bytes(value: str | int) -> int:
    """'12GB', '512MiB', '2G' or a plain number of bytes -> bytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"not a memory size: {value!r} (use e.g. '12GB', '512MiB' or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def process_budget_error(exc: BaseException, limit: int, setting: str, shown: str) -> ResourceBudgetError:
    message = (
        f"the step ran out of the process memory budget {setting} = {shown!r} ({_gib(limit)} of address space, "
        f"RLIMIT_AS) [{type(exc).__name__}: {exc}]. Raise {setting} (e.g. {setting}={max(1, 2 * limit // 2**20)}MiB) "
        f"or unset it to run without a cap; note the cap counts virtual address space, which is larger than "
        f"resident memory."
    )
    return ResourceBudgetError(message, setting, shown)


@contextmanager
def process_memory_budget(limit: str | int | None, setting: str = PROCESS_BUDGET_ENV) -> Iterator[int | None]:
    """Cap this process's address space at ``limit`` inside the block; a MemoryError becomes a
    ResourceBudgetError naming the budget. ``None`` or '' means no cap. The previous limit is restored."""
    if limit in (None, "", 0):
        yield None
        return
    wanted = parse_bytes(limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    try:
        yield wanted
    except ResourceBudgetError:
        raise
    except MemoryError as exc:
        raise process_budget_error(exc, wanted, setting, str(limit)) from exc
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def install_process_memory_budget(environ: os._Environ | dict | None = None) -> int | None:
    """Apply ``HM_MEMORY_BUDGET`` (if set) to the whole process, for entry points such as the CLI.

    Returns the cap in bytes. MemoryErrors are then raised by Python/numpy instead of an OOM kill;
    wrap the work in ``process_memory_budget`` to have them name the budget.
    """
    value = (environ if environ is not None else os.environ).get(PROCESS_BUDGET_ENV, "")
    if not value:
        return None
    wanted = parse_bytes(value)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    return wanted


# --- what interrupted runs leave behind -----------------------------------------------------------

TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
SPILL_NAME = re.compile(r"^duckdb-(?P<pid>\d+)-[0-9a-f]{6}$")


def _owner_pid(path: Path) -> int | None:
    match = TEMPORARY_NAME.match(path.name) or SPILL_NAME.match(path.name)
    return int(match.group("pid")) if match else None


def temporaries(root: Path) -> list[Path]:
    """Every temporary sibling (file or folder) and DuckDB spill folder under ``root``."""
    root = Path(root)
    if not root.exists():
        return []
    found = [p for p in root.rglob(".*.tmp-*") if TEMPORARY_NAME.match(p.name)]
    spill = root / "tmp"
    if spill.is_dir():
        found += [p for p in spill.iterdir() if SPILL_NAME.match(p.name)]
    # a temporary folder's own content is not reported separately
    folders = [p for p in found if p.is_dir()]
    return sorted(p for p in found if not any(f in p.parents for f in folders))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temporaries(root: Path) -> list[Path]:
    """Temporaries whose writing process no longer exists (on this host): left by killed runs."""
    return [p for p in temporaries(root) if not _alive(_owner_pid(p) or os.getpid())]


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete what killed runs left behind; temporaries of running processes are kept. Returns the removed paths."""
    removed = []
    for path in stale_temporaries(root):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


__all__ = [
    "PROCESS_BUDGET_ENV",
    "ResourceBudgetError",
    "duckdb_memory_guard",
    "install_process_memory_budget",
    "parse_bytes",
    "process_memory_budget",
    "raise_if_out_of_memory",
    "remove_stale_temporaries",
    "stale_temporaries",
    "temporaries",
]
