"""A registered model's ZenML versions as plain records for llm_trainer.version_compare (the `models compare`
command and the register step's comparison page)."""

from __future__ import annotations

import re
from typing import Any

from llm_trainer.version_compare import VersionRecord


def stage_of(version: Any) -> str | None:
    """A ZenML model version's stage as a string, None when it has none."""
    stage = getattr(version.stage, "value", version.stage)
    return None if stage in (None, "None", "none") else str(stage)


def data_fingerprint(version: Any) -> str | None:
    """The fingerprint (8 characters) of the data a version was trained on: recorded by the register step, or
    the end of the version's name (``<config hash>-<seed>-<fingerprint>``)."""
    recorded = (version.run_metadata or {}).get("source_fingerprint")
    if recorded:
        return str(recorded)[:8]
    found = re.search(r"-([0-9a-f]{8})$", version.name or "")
    return found.group(1) if found else None


def version_record(version: Any) -> VersionRecord:
    """What the comparison shows of one version, from the metadata the register step (and `models promote`)
    recorded on it; what an older version lacks is left empty."""
    metadata = version.run_metadata or {}
    return VersionRecord(number=int(version.number), stage=stage_of(version) or "-",
                         data=data_fingerprint(version) or "-", base_model=str(metadata.get("base_model") or ""),
                         trainer=str(metadata.get("trainer") or ""), created=version.created.strftime("%Y-%m-%d %H:%M"),
                         metrics=_numbers(metadata.get("evaluation_metrics")),
                         base_metrics=_numbers(metadata.get("base_model_metrics")),
                         replaced=_number_or_none(metadata.get("production_before")))


def version_records(name: str) -> list[VersionRecord]:
    """Every version of the registered model ``name``, oldest first ([] when there is no such model)."""
    from zenml.client import Client

    try:
        Client().get_model(name)
    except KeyError:
        return []
    versions = Client().list_model_versions(model=name, size=1000, sort_by="asc:number", hydrate=True)
    return [version_record(version) for version in versions.items]


def _numbers(metrics: Any) -> dict[str, float]:
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _number_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
