"""Booking service settings."""

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "booking"
    http_port: int = 8001
