"""Embedding jobs, one data path for every door (CLI now; index, server and cluster later):
sources -> decode (a thread) -> batches -> sessions -> sinks.

    from edgeclip.jobs import JobOptions, open_sink, run_job, sources
    sink = open_sink("emb.jsonl", settings)           # resumes, locks, refuses other settings
    summary = run_job(model, sources.image_dir("photos", ScanReport()), sink, JobOptions(truncate_dim=256))
    sink.close()
"""

from __future__ import annotations

from . import sources
from .pipeline import Failure, JobOptions, JobSummary, run_job
from .sinks import OutputSettings, RowBatch, Sink, open_sink, read_rows
from .sources import Item, ScanReport

__all__ = ["Failure", "Item", "JobOptions", "JobSummary", "OutputSettings", "RowBatch", "ScanReport", "Sink",
           "open_sink", "read_rows", "run_job", "sources"]
