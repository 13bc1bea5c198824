"""R16: one Microsoft Graph client per office that creates its Teams meetings, from the settings.

The office file names the app registration (tenant, client id); the secret or certificate is a
setting of the scheduler only (`GRAPH_CREDENTIALS`, `GRAPH_CERTIFICATES`), never logged. Where the
token and Graph are served is a setting too: the real Microsoft endpoints by default, the local
Graph contract server (deploy/graph_contract.py) in development and tests.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from services.scheduler.config import Settings
from services.scheduler.graph import GraphAccess, GraphMeetings
from shared.policy import Policies

PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


class GraphClients:
    def __init__(self, settings: Settings, policies: Policies) -> None:
        self.settings, self.policies = settings, policies
        self._clients: dict[str, GraphMeetings] = {}

    def missing(self) -> list[str]:
        """Offices whose policy creates Teams meetings through Graph with no credentials set."""
        return [
            office_id
            for office_id in self.policies.ids()
            if any(m.provider == "graph" for m in self.policies[office_id].meeting)
            and self.access(office_id) is None
        ]

    def access(self, office_id: str) -> GraphAccess | None:
        s, policy = self.settings, self.policies.get(office_id)
        tenant = next((m.graph for m in policy.meeting if m.graph is not None), None) if policy else None
        secret, pem = s.graph_credentials.get(office_id), s.graph_certificates.get(office_id)
        if tenant is None or (secret is None and pem is None):
            return None
        certificate = None
        if pem is not None:
            text = pem.read_text(encoding="ascii")
            cert = x509.load_pem_x509_certificate(text.encode())
            key = PRIVATE_KEY.search(text)
            if key is None:
                raise ValueError(f"GRAPH_CERTIFICATES[{office_id}]: {pem} holds no private key")
            certificate = (key.group(0), cert.fingerprint(hashes.SHA1()).hex())
        return GraphAccess(
            tenant_id=tenant.tenant_id,
            client_id=tenant.client_id,
            client_secret=secret.get_secret_value() if secret is not None else None,
            certificate=certificate,
            authority_host=s.graph_authority_host,
            graph_base=s.graph_base_url,
            ca_bundle=str(s.graph_ca_bundle) if s.graph_ca_bundle else None,
        )

    def get(self, office_id: str) -> GraphMeetings | None:
        if office_id not in self._clients:
            access = self.access(office_id)
            if access is None:
                return None
            self._clients[office_id] = GraphMeetings(access)
        return self._clients[office_id]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
