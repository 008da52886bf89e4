"""Benchmark task adapters: GSM8K, SVAMP, ASDiv, MultiArith, BIG-Bench Hard, AGIEval, ARC and
your own JSONL/CSV, each read in its upstream format (or from the hub) into train/dev/test
:class:`~nesyloop.tasks.base.Example` records (docs/benchmarks.md)."""

from .registry import BENCH_TASKS, TASKS, get_task, load_task
from .settings import SPLITS, BenchSettings, data_root

__all__ = ["BENCH_TASKS", "SPLITS", "TASKS", "BenchSettings", "data_root",
           "get_task", "load_task"]
