"""Notifier service settings."""

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "notifier"
    http_port: int = 8003
