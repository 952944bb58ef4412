"""TLS contexts of the HTTP and MQTT clients (docs/security.md); Kafka's are in kafka_clients.py.

InfluxDB over https is verified against `STRAINWATCH_INFLUX_CA_FILE` (or the system's CAs); MQTT over
TLS against `STRAINWATCH_MQTT_CA_FILE`. Verification is never turned off.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from strainwatch.config import get_settings


def influx_ca_file() -> str | None:
    ca = get_settings().influx_ca_file
    return str(ca) if ca else None


def influx_ssl_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """For urllib's https requests to InfluxDB: certificate and hostname verified."""
    ca = str(ca_file) if ca_file else influx_ca_file()
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)


def describe_tls_error(url: str, error: BaseException) -> str | None:
    """A clear message for a certificate the client does not trust (None for other errors)."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of {url} not trusted ({reason.verify_message}): set STRAINWATCH_INFLUX_CA_FILE "
            "to the CA that signed it"
        )
    return None
