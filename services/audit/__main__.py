"""Run the audit service: `python -m services.audit`."""

from services.audit.app import create_app
from services.audit.config import Settings
from shared.serve import run


def main() -> None:
    run(create_app, Settings)


if __name__ == "__main__":
    main()
