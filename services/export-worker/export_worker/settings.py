"""export-worker settings."""

from pathlib import Path

from pydantic import Field

from libs.settings import WorkerSettings


class Settings(WorkerSettings):
    service_name: str = "export-worker"
    http_port: int = Field(8103, ge=1, le=65535, description="Health and metrics.")
    handler_timeout_s: float = Field(600.0, gt=0, le=3600, description="A large export may take minutes.")
    export_dir: Path = Field(description="Where CSV files are written (shared with ingest-gateway for downloads).")
    export_batch_rows: int = Field(2_000, ge=100, le=100_000, description="Rows fetched per server-side cursor step.")
