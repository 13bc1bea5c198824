"""Run the console: `python -m services.console`."""

from services.console.app import create_app
from services.console.config import Settings
from shared.serve import run


def main() -> None:
    run(create_app, Settings)


if __name__ == "__main__":
    main()
