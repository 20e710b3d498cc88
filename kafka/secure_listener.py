"""A second, secured listener for the development broker: SASL_SSL with SCRAM-SHA-512 and ACLs.

Used by `broker.py up --secure`, for tests of what a secured production cluster does to a client
(a wrong password, an untrusted certificate, a missing ACL). Everything is made here, with
openssl: a throwaway CA, a server certificate for 127.0.0.1 signed by it, a PKCS12 keystore,
and random passwords for two SCRAM users added when the storage is formatted:

- `admin`: a super user, and so is ANONYMOUS (the PLAINTEXT listener's principal), so the
  plain listener keeps working for setting up topics and ACLs;
- `detector`: no rights until ACLs grant them.

The controller listener stays PLAINTEXT on loopback: SCRAM between controllers is not
supported (KAFKA-15513), and only the client listener is under test.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

SECURE_FILE = "secure.json"
MECHANISM = "SCRAM-SHA-512"
USERS = ("admin", "detector")


class SecureListenerError(RuntimeError):
    pass


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SecureListenerError(f"openssl {args[0]} failed: {done.stderr[-2000:]}")


def make_ca(folder: Path, name: str) -> Path:
    """A self-signed CA certificate (and its key) in `folder`; returns the certificate's path."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)  # fmt: skip
    return folder / "ca.pem"


def prepare(state: Path, host: str, secure_port: int) -> dict:
    """Certificates, passwords and the listener's properties; returns what `info` reports."""
    tls = state / "tls"
    ca = make_ca(tls, "rationanomaly test CA")
    (tls / "san.cnf").write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", "server.key",
             "-out", "server.csr", cwd=tls)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "server.pem", cwd=tls)  # fmt: skip
    store_password = secrets.token_hex(12)
    _openssl("pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-name", "broker",
             "-out", "server.p12", "-passout", f"pass:{store_password}", cwd=tls)  # fmt: skip
    secure = {
        "sasl_ssl_bootstrap": f"{host}:{secure_port}",
        "secure_port": secure_port,
        "mechanism": MECHANISM,
        "ca_location": str(ca),
        "users": {name: secrets.token_hex(12) for name in USERS},
        "keystore": str(tls / "server.p12"),
        "keystore_password": store_password,
    }
    (state / SECURE_FILE).write_text(json.dumps(secure, indent=2) + "\n")
    return secure


def properties(props: str, host: str, port: int, controller_port: int, secure: dict) -> str:
    """The template's plain broker properties with the SASL_SSL listener, SCRAM and ACLs added."""
    secure_port = secure["secure_port"]
    replaced = {
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port},SASL_SSL://{host}:{secure_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port},SASL_SSL://{host}:{secure_port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
    }
    lines = []
    for line in props.splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={replaced[key]}" if key in replaced else line)
    lines += [
        "",
        "# The secured client listener (kafka/secure_listener.py).",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"listener.name.sasl_ssl.sasl.enabled.mechanisms={MECHANISM}",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={secure['keystore']}",
        f"ssl.keystore.password={secure['keystore_password']}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin;User:ANONYMOUS",
        "allow.everyone.if.no.acl.found=false",
    ]
    return "\n".join(lines) + "\n"


def scram_format_args(secure: dict) -> list[str]:
    """`StorageTool format` arguments that add the SCRAM users with the storage."""
    args: list[str] = []
    for name, password in secure["users"].items():
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return args


def read(state: Path) -> dict | None:
    path = state / SECURE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
