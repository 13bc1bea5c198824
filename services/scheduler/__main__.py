"""Run the scheduler service: `python -m services.scheduler`."""

import uvicorn

from services.scheduler.app import create_app
from services.scheduler.config import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
