"""Scheduler service settings."""

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "scheduler"
    http_port: int = 8002
