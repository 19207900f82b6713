"""The operations console: server-rendered pages under /console for admins logged in with password and TOTP."""

from dlq_service.console.app import Console, build_console

__all__ = ["Console", "build_console"]
