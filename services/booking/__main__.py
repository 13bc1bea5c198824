"""Run the booking service: `python -m services.booking`."""

from services.booking.app import create_app
from services.booking.config import Settings
from shared.serve import run


def main() -> None:
    run(create_app, Settings)


if __name__ == "__main__":
    main()
