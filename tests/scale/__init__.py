"""The scale drills (issue 20): a 3-node RabbitMQ cluster, two replicas of every service, failures
under a booking stream. Their figures are printed at the end of the run (tests/conftest.py)."""
