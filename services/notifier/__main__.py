"""Run the notifier service: `python -m services.notifier`."""

from services.notifier.app import create_app
from services.notifier.config import Settings
from shared.serve import run


def main() -> None:
    run(create_app, Settings)


if __name__ == "__main__":
    main()
