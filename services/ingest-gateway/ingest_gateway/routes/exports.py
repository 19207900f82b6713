"""Report exports: requested here, written by export-worker, downloaded here once ready."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import Body, FromPath
from litestar.response import File
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway import exports
from ingest_gateway.exports import Export, ExportRequest
from ingest_gateway.outbox import Relay
from ingest_gateway.routes.errors import as_http
from ingest_gateway.settings import Settings
from libs.auth import Principal
from libs.web import error_responses


class ExportsController(Controller):
    path = "/api/v1/reports/exports"
    tags = ["exports"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @post("/", status_code=HTTP_202_ACCEPTED, raises=[HTTPException], responses=error_responses(404, 409, 503))
    async def request_export(
        self,
        data: Annotated[ExportRequest, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        relay: NamedDependency[Relay],
    ) -> Export:
        with as_http():
            export = await exports.request(engine, principal, data)
        relay.notify()
        return export

    @get("/{export_id:uuid}", responses=error_responses(409))
    async def export_status(
        self,
        export_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Export:
        with as_http():
            return await exports.status(engine, export_id, principal)

    @get("/{export_id:uuid}/download", media_type="text/csv", responses=error_responses(409))
    async def download(
        self,
        export_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
    ) -> File:
        with as_http():
            ready = await exports.download(engine, settings.export_dir, export_id, principal)
        return File(path=ready.path, filename=ready.filename, media_type="text/csv")
