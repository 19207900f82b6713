"""deploy/postgres/fmhl.conf as the deployment tests read it: the PostgreSQL server settings every deployment
applies its own way (stack.sh, docker-compose.yml, the production cluster)."""

from __future__ import annotations

from pathlib import Path

POSTGRES_CONF = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "fmhl.conf"
SERVER_SETTINGS = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "wal_compression")
"""What deploy/postgres/fmhl.conf sets; each deployment applies it its own way."""


def declared_settings() -> dict[str, str]:
    """The settings deploy/postgres/fmhl.conf sets, by name, as PostgreSQL's SHOW spells them."""
    settings = {}
    for line in POSTGRES_CONF.read_text().splitlines():
        name, equals, value = line.split("#", 1)[0].partition("=")
        if equals:
            settings[name.strip()] = value.strip().strip("'")
    return settings
