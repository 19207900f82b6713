"""What every service process is made of, and which six services there are."""

from libs.runtime.assembly import ServiceRuntime, run_service
from libs.runtime.services import SERVICES, Service, service

__all__ = ["SERVICES", "Service", "ServiceRuntime", "run_service", "service"]
