"""Run the scheduler service: `python -m services.scheduler`."""

from services.scheduler.app import create_app
from services.scheduler.config import Settings
from shared.serve import run


def main() -> None:
    run(create_app, Settings)


if __name__ == "__main__":
    main()
