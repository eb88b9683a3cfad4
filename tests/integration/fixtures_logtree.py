"""A deterministic synthetic Airflow 2 log directory, for the log-migration tests and benchmark.

Layout (what ``/srv/airflow-<instance>/logs`` holds on a legacy host)::

    dag_id=<dag>/run_id=<run>/task_id=<task>/attempt=<n>.log
    dag_id=<dag>/run_id=<run>/task_id=<task>/map_index=<i>/attempt=<n>.log   (mapped tasks)
    scheduler/<YYYY-MM-DD>/<dag file>.py.log
    scheduler/latest -> <newest date dir>                                    (a symlink, as Airflow makes)
    dag_processor_manager/dag_processor_manager.log

Run ids carry ``+`` and ``:`` (``scheduled__2024-01-01T00:00:00+00:00``), as real ones do, so keys
need URL encoding.  DAG sizes are skewed (a few DAGs hold most files), like a real instance.
Files are 1-20 KB of log-looking text, every file's bytes unique (its path is in its first line).

``make_tree(root, files=20000, seed=0)`` takes well under a second per 10,000 files; the same
``(files, seed)`` always yields the same paths and bytes.  ``mutate`` changes a deterministic
sample in place (appends, as Airflow does to a running task's log) and adds a few new files.
"""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

MIN_SIZE = 1024
_EPOCH = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
MAX_SIZE = 20 * 1024
_LINE_TEMPLATES = (
    "[{ts}] {{taskinstance.py:1157}} INFO - Dependencies all met for dep_context=non-requeueable deps ti=<TaskInstance: {dag}.{task} {run} [queued]>\n",
    "[{ts}] {{standard_task_runner.py:57}} INFO - Started process {pid} to run task\n",
    "[{ts}] {{logging_mixin.py:188}} INFO - Running <TaskInstance: {dag}.{task} {run} [running]> on host an-airflow1005.eqiad.wmnet\n",
    "[{ts}] {{spark_submit.py:490}} INFO - 24/01/01 00:00:{sec:02d} INFO Client: Application report for application_{pid}_0001 (state: RUNNING)\n",
    "[{ts}] {{subprocess.py:93}} INFO - Output: rows written={pid} partitions={sec}\n",
    "[{ts}] {{taskinstance.py:1400}} INFO - Marking task as SUCCESS. dag_id={dag}, task_id={task}, execution_date={run}\n",
)


@dataclass
class LogTree:
    root: Path
    files: list[str] = field(default_factory=list)  # relative paths of regular files, sorted
    symlinks: list[str] = field(default_factory=list)  # relative paths of symlinks (never uploaded)

    def prefix_of(self, rel: str) -> str:
        return rel.split("/", 1)[0]

    def per_prefix(self) -> dict[str, tuple[int, int]]:
        """{top-level entry: (regular files, total bytes)} measured on disk now."""
        out: dict[str, tuple[int, int]] = {}
        for rel in self.files:
            count, size = out.get(self.prefix_of(rel), (0, 0))
            out[self.prefix_of(rel)] = (count + 1, size + (self.root / rel).stat().st_size)
        return out

    def total_bytes(self) -> int:
        return sum(size for _, size in self.per_prefix().values())


def _filler(rng: random.Random, size: int) -> bytes:
    """A block of log-looking lines, at least ``size`` bytes, reused (sliced) by every file."""
    chunks: list[str] = []
    total = 0
    while total < size:
        line = rng.choice(_LINE_TEMPLATES).format(
            ts=f"2024-01-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00.000+0000",
            dag="dag", task="task", run="run", pid=rng.randint(1000, 99999), sec=rng.randint(0, 59),
        )
        chunks.append(line)
        total += len(line)
    return "".join(chunks).encode()


def _plan(files: int, rng: random.Random) -> list[tuple[str, int]]:
    """(relative path, size) for ``files`` regular files."""
    scheduler_files = max(1, files // 10)
    manager_files = 1
    task_files = files - scheduler_files - manager_files
    plan: list[tuple[str, int]] = []

    # skewed DAG sizes: weight 1/(rank+1) over ~files/250 DAGs (at least 8)
    dag_count = max(8, files // 250)
    weights = [1.0 / (rank + 1) for rank in range(dag_count)]
    scale = task_files / sum(weights)
    per_dag = [max(1, int(w * scale)) for w in weights]
    per_dag[0] += task_files - sum(per_dag)  # the largest DAG takes the rounding
    for d, count in enumerate(per_dag):
        dag = f"{rng.choice(('search', 'analytics', 'platform_eng', 'wmde'))}_{rng.choice(('daily', 'hourly', 'weekly'))}_{d:03d}"
        interval = rng.choice((1, 24, 168))
        tasks = [f"{rng.choice(('extract', 'transform', 'load', 'wait_for', 'spark_job'))}_{t}"
                 for t in range(rng.randint(2, 6))]
        made = 0
        run = 0
        while made < count:
            kind = "manual" if run % 17 == 3 else "scheduled"
            when = _EPOCH + datetime.timedelta(hours=run * interval)
            run_id = f"{kind}__{when.isoformat()}"
            for task in tasks:
                if made >= count:
                    break
                base = f"dag_id={dag}/run_id={run_id}/task_id={task}"
                if task.startswith("spark_job") and run % 5 == 0:
                    base += f"/map_index={run % 3}"
                for attempt in range(1, 2 + (run + len(task)) % 2):  # 1 or 2 attempts
                    if made >= count:
                        break
                    plan.append((f"{base}/attempt={attempt}.log", rng.randint(MIN_SIZE, MAX_SIZE)))
                    made += 1
            run += 1

    for i in range(scheduler_files):
        day = f"2024-01-{i % 28 + 1:02d}"
        plan.append((f"scheduler/{day}/dags/{i // 28:05d}_dag.py.log", rng.randint(MIN_SIZE, MAX_SIZE)))
    plan.append(("dag_processor_manager/dag_processor_manager.log", rng.randint(MIN_SIZE, MAX_SIZE)))
    if len({rel for rel, _ in plan}) != len(plan):
        raise AssertionError("the synthetic tree plan repeats a path")
    return plan


def make_tree(root: Path, files: int = 20000, seed: int = 0) -> LogTree:
    """Write the tree under ``root`` (created; must not hold another tree) and describe it."""
    rng = random.Random(seed)
    filler = _filler(rng, 256 * 1024)
    plan = _plan(files, rng)
    root.mkdir(parents=True, exist_ok=True)
    made_dirs: set[str] = set()
    for rel, size in plan:
        parent = rel.rsplit("/", 1)[0]
        if parent not in made_dirs:
            os.makedirs(root / parent, exist_ok=True)
            made_dirs.add(parent)
        head = f"*** log of {rel}\n".encode()
        offset = rng.randrange(0, len(filler) - MAX_SIZE)
        body = head + filler[offset:offset + size - len(head)] if size > len(head) else head[:size]
        with open(root / rel, "wb") as f:
            f.write(body)
    newest = max(rel.split("/")[1] for rel, _ in plan if rel.startswith("scheduler/"))
    os.symlink(newest, root / "scheduler" / "latest")
    return LogTree(root=root, files=sorted(rel for rel, _ in plan), symlinks=["scheduler/latest"])


def mutate(tree: LogTree, fraction: float = 0.01, new_files: int = 5, seed: int = 1) -> tuple[list[str], list[str]]:
    """Append a line to ``fraction`` of the files and add ``new_files`` new ones.

    Returns (changed, added) relative paths.  Appending grows the size, so any sync tool notices;
    the new files go to an existing DAG (a retry attempt) and to a brand-new DAG.
    """
    rng = random.Random(seed)
    changed = sorted(rng.sample(tree.files, max(1, int(len(tree.files) * fraction))))
    for rel in changed:
        with open(tree.root / rel, "ab") as f:
            f.write(f"[2024-02-01T00:00:00.000+0000] {{taskinstance.py:1400}} INFO - appended by mutate({seed})\n".encode())
    added: list[str] = []
    first_task_file = next(rel for rel in tree.files if rel.startswith("dag_id="))
    for i in range(new_files):
        if i % 2 == 0:
            rel = first_task_file.rsplit("/", 1)[0] + f"/attempt={100 + seed * 10 + i}.log"
        else:
            rel = f"dag_id=new_dag_{seed}/run_id=manual__2024-02-01T00:00:00+00:00/task_id=t{i}/attempt=1.log"
        path = tree.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"*** log of {rel}\n".encode() * rng.randint(20, 200))
        added.append(rel)
    tree.files = sorted(set(tree.files) | set(added))
    return changed, added
