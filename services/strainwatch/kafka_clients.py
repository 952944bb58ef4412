"""The one place Kafka clients get their security settings (docs/security.md).

Every client strainwatch creates (aiokafka, kafka-python and faust's own) takes its connection security
from here, so TLS and SASL/SCRAM are configured once, in `STRAINWATCH_KAFKA_*`:

    AIOKafkaProducer(bootstrap_servers=..., **aiokafka_security())
    KafkaAdminClient(bootstrap_servers=..., **kafka_python_security())
    faust.App(..., broker_credentials=faust_credentials())

Without a Settings argument the process's settings (environment) are used, so a function that only
receives a bootstrap string still connects the way the service was configured.
"""

from __future__ import annotations

import ssl
from typing import Any

from strainwatch.config import Settings, get_settings


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else get_settings()


def _uses_ssl(s: Settings) -> bool:
    return s.kafka_security_protocol in ("SSL", "SASL_SSL")


def _uses_sasl(s: Settings) -> bool:
    return s.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def ssl_context(settings: Settings | None = None) -> ssl.SSLContext | None:
    """The TLS context of Kafka connections (None for PLAINTEXT and SASL_PLAINTEXT): the CA file (or
    the system's CAs), hostname checked, optionally a client certificate for mutual TLS."""
    s = _settings(settings)
    if not _uses_ssl(s):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None
    )
    context.check_hostname = s.kafka_ssl_check_hostname
    if s.kafka_ssl_certfile is not None:
        context.load_cert_chain(
            str(s.kafka_ssl_certfile), str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None
        )
    return context


def aiokafka_security(settings: Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    s = _settings(settings)
    kwargs: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    context = ssl_context(s)
    if context is not None:
        kwargs["ssl_context"] = context
    if _uses_sasl(s):
        kwargs.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password.get_secret_value(),
        )
    return kwargs


def kafka_python_security(settings: Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    s = _settings(settings)
    kwargs: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if _uses_ssl(s):
        # kafka-python builds its context from these (a context object would also do, but the
        # files keep it re-creatable on reconnects)
        kwargs["ssl_check_hostname"] = s.kafka_ssl_check_hostname
        if s.kafka_ssl_cafile is not None:
            kwargs["ssl_cafile"] = str(s.kafka_ssl_cafile)
        if s.kafka_ssl_certfile is not None:
            kwargs["ssl_certfile"] = str(s.kafka_ssl_certfile)
        if s.kafka_ssl_keyfile is not None:
            kwargs["ssl_keyfile"] = str(s.kafka_ssl_keyfile)
    if _uses_sasl(s):
        kwargs.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password.get_secret_value(),
        )
    return kwargs


def faust_credentials(settings: Settings | None = None) -> Any:
    """faust's `broker_credentials` (its consumers, producers and admin all use them), or None."""
    import faust

    s = _settings(settings)
    context = ssl_context(s)
    if _uses_sasl(s):
        return faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=s.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=s.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def describe(settings: Settings | None = None) -> dict[str, Any]:
    """What the clients use, for logs: protocol, mechanism, user and CA file, never the password."""
    s = _settings(settings)
    out: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if _uses_sasl(s):
        out.update(sasl_mechanism=s.kafka_sasl_mechanism, sasl_username=s.kafka_sasl_username)
    if _uses_ssl(s):
        out["ssl_cafile"] = str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else "system"
    return out
