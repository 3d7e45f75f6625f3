"""Settings of every process, read from the environment (prefix PACKAGES_ or the usual names)."""

from __future__ import annotations

import ssl
from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from aiokafka.abc import AbstractTokenProvider
from faststream.security import (
    BaseSecurity,
    SASLOAuthBearer,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PACKAGES_"
DAY_S = 86_400.0
# Inbox rows outlive the topics' retention by this much at least: a message still on a topic
# (or replayed from its DLQ at the last moment) must still be recognised as a duplicate.
INBOX_MARGIN_S = DAY_S
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class Settings(BaseSettings):
    """What a process needs to reach Kafka and PostgreSQL and how hard to work."""

    # Errors never echo the input: a bad DATABASE_URL would print its password.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "PACKAGES_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    database_url: SecretStr = Field(
        SecretStr("postgresql+asyncpg://packages@127.0.0.1:5432/packages"),
        validation_alias=AliasChoices("DATABASE_URL", "PACKAGES_DATABASE_URL"),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None
    ) = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_oauth_token_file: Path | None = Field(
        None, description="OAUTHBEARER: a file holding the current token, renewed by the platform"
    )
    kafka_sasl_oauth_token_url: str | None = Field(
        None, description="OAUTHBEARER: the OAuth server's token endpoint (client credentials)"
    )
    kafka_sasl_oauth_client_id: str | None = None
    kafka_sasl_oauth_client_secret: SecretStr | None = None
    kafka_sasl_oauth_scope: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="The client certificate's key")
    kafka_ssl_key_password: SecretStr | None = None
    database_ssl: Literal["disable", "prefer", "require", "verify-full"] = "disable"
    database_ssl_rootcert: Path | None = Field(
        None,
        description="verify-full: the CA that signs the server's certificate (else PGSSLROOTCERT)",
    )

    api_auth: Literal["required", "disabled"] = Field(
        "required", description="disabled: the read API answers without a token (local use only)"
    )
    api_jwks_file: Path | None = Field(None, description="JWKS of the token issuer (RS256/ES256)")
    api_jwks_url: str | None = Field(None, description="URL of the token issuer's JWKS")
    api_jwt_secret: SecretStr | None = Field(None, description="Shared HS256 key of the issuer")
    api_jwt_issuer: str | None = Field(None, description="The `iss` every token must carry")
    api_jwt_audience: str | None = Field(None, description="The `aud` every token must carry")
    api_jwt_leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed")

    batch_max_records: int = Field(1000, ge=1, le=10_000)
    batch_timeout_ms: int = Field(20, ge=1, le=10_000)
    max_attempts: int = Field(
        3, ge=1, le=100, description="Tries of a failing message before it is dead-lettered"
    )
    retry_max_backoff_s: float = Field(5.0, gt=0)
    db_pool_size: int = Field(5, ge=1, le=100)
    relay_poll_interval_s: float = Field(0.5, gt=0)
    relay_batch: int = Field(1000, ge=1, le=100_000)
    early_event_wait_s: float = Field(
        300.0,
        ge=0,
        description="How long an event waits for what it depends on (a plan, a package)",
    )
    sweep_interval_s: float = Field(1.0, gt=0)
    http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Health and metrics port of a worker; unset for its service's own, 0 for none",
    )
    watch_interval_s: float = Field(
        10.0, gt=0, le=15, description="How often lag, outbox and table sizes are sampled"
    )
    rejoin_bound_s: float = Field(
        60.0, gt=0, description="How long a consumer may rejoin its group and still be ready"
    )
    health_timeout_s: float = Field(2.0, gt=0, description="How long a readiness check may take")
    outbox_retention_s: float = Field(
        7 * DAY_S, gt=0, description="How long sent outbox rows are kept before they are pruned"
    )
    topic_retention_s: float = Field(
        7 * DAY_S, gt=0, description="How long the inbound topics keep messages (retention.ms)"
    )
    inbox_retention_s: float = Field(
        8 * DAY_S, gt=0, description="How long inbox rows are kept; topics' retention + a day"
    )
    prune_interval_s: float = Field(60.0, gt=0, description="Pause between pruning rounds")
    prune_batch: int = Field(1000, ge=1, le=100_000, description="Rows deleted per statement")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    topic_replication_factor: int = Field(
        3, ge=1, le=5, description="Replicas of every topic; 1 for a single local broker"
    )
    topic_min_insync_replicas: int | None = Field(
        None, ge=1, le=5, description="In-sync replicas a write needs; unset: replication - 1"
    )
    fault_crash_marker: str | None = Field(
        None, description="Tests only: SIGKILL after the commit of a batch holding this text"
    )
    fault_crash_once_file: Path | None = Field(None, description="Tests only: crash once per file")
    fault_fail_event_id: str | None = Field(
        None, description="Tests only: the handler raises for the event of this id"
    )
    fault_relay_crash_once_file: Path | None = Field(
        None, description="Tests only: SIGKILL once between publishing and marking sent"
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _has_hosts(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(":" not in h for h in hosts):
            raise ValueError("must be host:port[,host:port...]")
        return ",".join(hosts)

    @field_validator("database_url")
    @classmethod
    def _is_asyncpg(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        if not url.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql:// or postgresql+asyncpg:// URL")
        return SecretStr(url)

    @field_validator("kafka_ssl_cafile")
    @classmethod
    def _cafile_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def min_insync_replicas(self) -> int:
        """In-sync replicas an `acks=all` write needs: one broker may be down, not two."""
        given = self.topic_min_insync_replicas
        return given if given is not None else max(1, self.topic_replication_factor - 1)

    @model_validator(mode="after")
    def _insync_fits_replication(self) -> Self:
        if self.min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"{ENV_PREFIX}TOPIC_MIN_INSYNC_REPLICAS={self.min_insync_replicas} exceeds "
                f"{ENV_PREFIX}TOPIC_REPLICATION_FACTOR={self.topic_replication_factor}:"
                " no write could ever succeed"
            )
        return self

    @field_validator(
        "api_jwks_file",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_sasl_oauth_token_file",
        "database_ssl_rootcert",
    )
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("api_jwks_url", "kafka_sasl_oauth_token_url")
    @classmethod
    def _url_is_https(cls, value: str | None) -> str | None:
        # Plain http only to this machine: keys and client secrets must not cross a network bare.
        local = value is not None and value.startswith(("http://127.0.0.1", "http://localhost"))
        if value is not None and not (value.startswith("https://") or local):
            raise ValueError("must be an https:// URL")
        return value

    @field_validator("api_jwt_secret")
    @classmethod
    def _secret_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        # RFC 7518 3.2: an HS256 key has at least as many bits as the hash, 256.
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        """Tokens are checked against one kind of key: a JWKS (file or URL) or a secret."""
        given = [self.api_jwks_file, self.api_jwks_url, self.api_jwt_secret]
        if sum(source is not None for source in given) > 1:
            raise ValueError(
                f"set one of {ENV_PREFIX}API_JWKS_FILE, {ENV_PREFIX}API_JWKS_URL and "
                f"{ENV_PREFIX}API_JWT_SECRET, not several"
            )
        return self

    def api_auth_problem(self) -> str | None:
        """Why the read API cannot check tokens as configured; None when it can (or need not)."""
        if self.api_auth == "disabled":
            return None
        if not (self.api_jwks_file or self.api_jwks_url or self.api_jwt_secret):
            return (
                f"the read API needs {ENV_PREFIX}API_JWKS_FILE, {ENV_PREFIX}API_JWKS_URL or "
                f"{ENV_PREFIX}API_JWT_SECRET (or {ENV_PREFIX}API_AUTH=disabled, for local use)"
            )
        if not (self.api_jwt_issuer and self.api_jwt_audience):
            return f"the read API needs {ENV_PREFIX}API_JWT_ISSUER and {ENV_PREFIX}API_JWT_AUDIENCE"
        return None

    @model_validator(mode="after")
    def _inbox_outlives_topics(self) -> Self:
        """Pruning an inbox row whose message a topic still holds would let it apply twice."""
        if self.inbox_retention_s < self.topic_retention_s + INBOX_MARGIN_S:
            raise ValueError(
                f"{ENV_PREFIX}INBOX_RETENTION_S must be at least {ENV_PREFIX}TOPIC_RETENTION_S"
                f" + {INBOX_MARGIN_S:.0f} s ({self.topic_retention_s + INBOX_MARGIN_S:.0f} s),"
                f" not {self.inbox_retention_s:.0f} s"
            )
        return self

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> Self:
        """A SASL protocol, its mechanism and its credentials go together, or not at all."""
        sasl = self.kafka_security_protocol in _SASL_PROTOCOLS
        mechanism = self.kafka_sasl_mechanism
        if sasl and not mechanism:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM "
                "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"
            )
        if mechanism and not sasl:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM needs {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL "
                f"SASL_SSL or SASL_PLAINTEXT, not {self.kafka_security_protocol}"
            )
        if mechanism == "OAUTHBEARER":
            return self._oauth_is_complete()
        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        if mechanism and not (self.kafka_sasl_username and password):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM={mechanism} needs "
                f"{ENV_PREFIX}KAFKA_SASL_USERNAME and {ENV_PREFIX}KAFKA_SASL_PASSWORD"
            )
        return self

    def _oauth_is_complete(self) -> Self:
        file, url = self.kafka_sasl_oauth_token_file, self.kafka_sasl_oauth_token_url
        if (file is None) == (url is None):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM=OAUTHBEARER needs one of "
                f"{ENV_PREFIX}KAFKA_SASL_OAUTH_TOKEN_FILE and "
                f"{ENV_PREFIX}KAFKA_SASL_OAUTH_TOKEN_URL"
            )
        if url and not (self.kafka_sasl_oauth_client_id and self.kafka_sasl_oauth_client_secret):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_OAUTH_TOKEN_URL needs "
                f"{ENV_PREFIX}KAFKA_SASL_OAUTH_CLIENT_ID and "
                f"{ENV_PREFIX}KAFKA_SASL_OAUTH_CLIENT_SECRET"
            )
        return self

    @model_validator(mode="after")
    def _client_certificate_is_complete(self) -> Self:
        """A client certificate comes with its key, over TLS."""
        cert, key = self.kafka_ssl_certfile, self.kafka_ssl_keyfile
        if (cert is None) != (key is None):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SSL_CERTFILE and {ENV_PREFIX}KAFKA_SSL_KEYFILE go together"
            )
        if cert and self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SSL_CERTFILE needs {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL "
                f"SSL or SASL_SSL, not {self.kafka_security_protocol}"
            )
        if self.kafka_ssl_key_password and not key:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SSL_KEY_PASSWORD needs {ENV_PREFIX}KAFKA_SSL_KEYFILE"
            )
        if cert and key:
            secret = self.kafka_ssl_key_password
            password = secret.get_secret_value() if secret else ""
            try:
                # A callable, never None: without a password OpenSSL would prompt on a terminal.
                ssl.create_default_context().load_cert_chain(cert, key, lambda: password)
            except (ssl.SSLError, OSError):
                raise ValueError(
                    f"{ENV_PREFIX}KAFKA_SSL_CERTFILE and {ENV_PREFIX}KAFKA_SSL_KEYFILE do not load "
                    f"as a certificate and its key (is {ENV_PREFIX}KAFKA_SSL_KEY_PASSWORD right?)"
                ) from None
        return self

    def broker_security(self) -> BaseSecurity | None:
        """The same security as FastStream's broker wants it (its token: `kafka_token_provider`)."""
        options = self.kafka_options()
        ssl_context = options.get("ssl_context")
        use_ssl = self.kafka_security_protocol == "SASL_SSL"
        if self.kafka_sasl_mechanism == "OAUTHBEARER":
            return SASLOAuthBearer(ssl_context=ssl_context, use_ssl=use_ssl)  # type: ignore[arg-type]
        if not self.kafka_sasl_mechanism:
            return BaseSecurity(ssl_context=ssl_context) if ssl_context else None  # type: ignore[arg-type]
        kind = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }[self.kafka_sasl_mechanism]
        return kind(
            username=self.kafka_sasl_username or "",
            password=self.kafka_sasl_password.get_secret_value()
            if self.kafka_sasl_password
            else "",
            ssl_context=ssl_context,  # type: ignore[arg-type]
            use_ssl=use_ssl,
        )

    @cached_property
    def kafka_token_provider(self) -> AbstractTokenProvider | None:
        """Where OAUTHBEARER tokens come from: one per process, shared by its clients."""
        from services.kernel.oauth import ClientCredentialsTokenProvider, FileTokenProvider

        if self.kafka_sasl_mechanism != "OAUTHBEARER":
            return None
        if self.kafka_sasl_oauth_token_file is not None:
            return FileTokenProvider(self.kafka_sasl_oauth_token_file)
        return ClientCredentialsTokenProvider(
            self.kafka_sasl_oauth_token_url or "",
            self.kafka_sasl_oauth_client_id or "",
            self.kafka_sasl_oauth_client_secret or SecretStr(""),
            self.kafka_sasl_oauth_scope,
        )

    def kafka_options(self) -> dict[str, object]:
        """Connection options for aiokafka clients (security included)."""
        options: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.kafka_ssl_cafile,
                certfile=str(self.kafka_ssl_certfile) if self.kafka_ssl_certfile else None,
                keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                password=self.kafka_ssl_key_password.get_secret_value()
                if self.kafka_ssl_key_password
                else None,
            )
        if self.kafka_sasl_mechanism == "OAUTHBEARER":
            options["sasl_mechanism"] = "OAUTHBEARER"
            options["sasl_oauth_token_provider"] = self.kafka_token_provider
        elif self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        return options


def _variable(field: str | int) -> str:
    """The environment variable a settings field is read from."""
    name = str(field)
    info = Settings.model_fields.get(name)
    if info is None:
        return name  # already an alias such as DATABASE_URL
    if isinstance(info.validation_alias, AliasChoices):
        return str(info.validation_alias.choices[0])
    return ENV_PREFIX + name.upper()


def describe(error: ValidationError) -> str:
    """One line naming each bad variable and what is wrong with it; never its value."""
    parts = []
    for e in error.errors():
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"{_variable(e['loc'][0])}: {message}" if e["loc"] else message)
    return "; ".join(parts)


def load_settings() -> Settings:
    """The process's settings; a bad one ends the process with one line instead of a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SystemExit(f"invalid settings: {describe(exc)}") from None
