"""The staff and auditors' console: server-rendered pages over the services' HTTP APIs (issue 18)."""
