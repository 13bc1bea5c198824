"""Run the notifier service: `python -m services.notifier`."""

import uvicorn

from services.notifier.app import create_app
from services.notifier.config import Settings
from shared.logsafe import configure_logging


def main() -> None:
    settings = Settings()
    app = create_app(settings)

    async def redacting_logs() -> None:  # R12: once uvicorn has set up its loggers
        configure_logging(settings.service_name, settings.log_level)

    app.state.runtime.on_startup(redacting_logs)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
