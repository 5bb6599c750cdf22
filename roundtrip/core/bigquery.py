"""How to reach BigQuery, shared by the loaders (REST + Storage Write) and reverse_etl (Storage
Read): real BigQuery with application-default or service-account credentials, or the emulator
(plaintext gRPC, anonymous) when ``ROUNDTRIP_BQ_API_ENDPOINT`` is set. Drivers import lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from roundtrip.core.errors import ConfigError

if TYPE_CHECKING:
    from roundtrip.core.settings import Settings


@dataclass(frozen=True)
class BigQueryConnection:
    project: str
    location: str = "EU"
    keyfile: str | None = None
    token: str | None = field(default=None, repr=False)  # a short-lived access token (oauth-secrets)
    api_endpoint: str | None = None  # REST, e.g. http://127.0.0.1:9050 (emulator)
    storage_endpoint: str | None = None  # Storage Read/Write gRPC host:port (emulator, plaintext)

    @classmethod
    def from_settings(cls, settings: Settings) -> BigQueryConnection:
        return cls(
            project=settings.bq_project,
            location=settings.bq_location,
            keyfile=str(settings.bq_keyfile) if settings.bq_keyfile else None,
            token=settings.secret("bq_token"),
            api_endpoint=settings.bq_api_endpoint,
            storage_endpoint=settings.bq_storage_endpoint,
        )

    @property
    def emulated(self) -> bool:
        return bool(self.api_endpoint)

    def _credentials(self) -> Any:
        if self.emulated:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()  # type: ignore[no-untyped-call]
        if self.keyfile:
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(self.keyfile)  # type: ignore[no-untyped-call]
        if self.token:
            from google.oauth2.credentials import Credentials

            return Credentials(self.token)  # type: ignore[no-untyped-call]
        return None  # application-default credentials

    def rest_client(self) -> Any:
        from google.cloud import bigquery

        options = None
        if self.api_endpoint:
            from google.api_core.client_options import ClientOptions

            options = ClientOptions(api_endpoint=self.api_endpoint)
        return bigquery.Client(
            project=self.project, location=self.location, credentials=self._credentials(), client_options=options
        )

    def _channel(self) -> Any:
        if not self.storage_endpoint:
            raise ConfigError("ROUNDTRIP_BQ_STORAGE_ENDPOINT must name the emulator's gRPC host:port")
        import grpc

        return grpc.insecure_channel(self.storage_endpoint)

    def read_client(self) -> Any:
        """A Storage Read API client (Arrow record batches)."""
        from google.cloud.bigquery_storage_v1 import BigQueryReadClient

        if self.emulated:
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

            return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=self._channel()))
        return BigQueryReadClient(credentials=self._credentials())

    def write_client(self) -> Any:
        """A Storage Write API client."""
        from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

        if self.emulated:
            from google.cloud.bigquery_storage_v1.services.big_query_write.transports import BigQueryWriteGrpcTransport

            return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=self._channel()))
        return BigQueryWriteClient(credentials=self._credentials())
