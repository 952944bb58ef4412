"""Test-only: certificates made at test time and Apache Kafka 4.4 with a SASL_SSL listener (SCRAM).

`make_pki()` writes a CA and a server certificate for 127.0.0.1/localhost (PEM, unencrypted key) with
the `cryptography` package. `start_secure_kafka()` starts Apache Kafka KRaft from the stack's Maven
jars with one SASL_SSL listener (TLS with that certificate, SCRAM-SHA-512), the SCRAM users created
when the storage is formatted (`--add-scram`), as KRaft requires.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strainwatch.stack import components
from strainwatch.stack.procs import Proc, StackError, free_port, spawn, tcp_open, wait_until


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server certificate (chain: itself)
    key: Path  # its private key (PKCS#8, unencrypted)
    keystore: Path  # key and certificate in one PEM file (Kafka's PEM keystore)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path, cn: str = "strainwatch-test-ca") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pki = Pki(
        directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "keystore.pem"
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(pem_cert)
    pki.key.write_bytes(pem_key)
    pki.keystore.write_bytes(pem_key + pem_cert)
    for path in (pki.key, pki.keystore):
        path.chmod(0o600)
    return pki


@dataclass
class SecureKafka:
    bootstrap: str
    proc: Proc
    pki: Pki
    users: dict[str, str]
    log_path: Path

    def client_env(self, user: str, **extra: str) -> dict[str, str]:
        """The STRAINWATCH_* settings of a client logging in as `user` (password in the environment)."""
        return {
            "STRAINWATCH_KAFKA_BOOTSTRAP": self.bootstrap,
            "STRAINWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STRAINWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STRAINWATCH_KAFKA_SASL_USERNAME": user,
            "STRAINWATCH_KAFKA_SASL_PASSWORD": self.users[user],
            "STRAINWATCH_KAFKA_SSL_CAFILE": str(self.pki.ca),
            **extra,
        }


def start_secure_kafka(state_dir: Path, pki: Pki, users: dict[str, str]) -> SecureKafka:
    """Apache Kafka KRaft, one SASL_SSL listener (SCRAM-SHA-512) for clients and the broker itself."""
    lib = components.ensure_kafka_jars()
    port, controller_port = free_port(), free_port()
    home = state_dir / "kafka"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    admin, admin_password = "broker-admin", uuid.uuid4().hex
    props = home / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
                f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=SASL_SSL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{admin}" password="{admin_password}";',
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={pki.keystore}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={pki.ca}",
                "ssl.endpoint.identification.algorithm=https",
                f"log.dirs={data}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )
    )
    log_path = state_dir / "logs" / "kafka-server.log"
    log4j = home / "log4j2.properties"
    log4j.write_text(components._LOG4J2.format(log=log_path))
    java = ["java", "-Xmx512m", "-Xms256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]
    scram = [f"SCRAM-SHA-512=[name={name},password={password}]" for name, password in users.items()]
    scram.append(f"SCRAM-SHA-512=[name={admin},password={admin_password}]")
    cluster_id = components._cluster_id()
    result = subprocess.run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={cluster_id}",
            "-c",
            str(props),
            *(arg for entry in scram for arg in ("--add-scram", entry)),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    proc = spawn(
        "broker",
        [*java, "kafka.Kafka", str(props)],
        port=port,
        log_path=state_dir / "logs" / "kafka.log",
        marker=str(props),
    )
    wait_until(lambda: tcp_open(port), timeout_s=90, what="Apache Kafka (SASL_SSL)", proc=proc)
    return SecureKafka(f"127.0.0.1:{port}", proc, pki, dict(users), log_path)
