"""Batch screening: ``cds batch`` evaluates a population (a FHIR Bulk Data
export or a directory of bundles) on every core, or on a Dask cluster."""

from __future__ import annotations

from cds.batch.runner import Summary, run_batch
from cds.batch.sources import open_source

__all__ = ["Summary", "open_source", "run_batch"]
