"""Audit service settings."""

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "audit"
    http_port: int = 8004
