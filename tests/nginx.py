"""A real nginx for end-to-end tests: Debian's binary, run in the foreground from a directory of
the test's own, serving an example site file from deploy/ with a few of its values replaced;
and the certificate authority and server certificate it serves https with."""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers import unavailable


def nginx_binary() -> str:
    """The nginx executable (skips, or fails on CI, when there is none)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        unavailable("nginx", "no nginx executable on PATH or in /usr/sbin "
                             "(apt-get install nginx-light)")
    assert found is not None
    return found


def render(template: Path, replacements: dict[str, str]) -> str:
    """The template's text with each key replaced; every key must occur in it, so an example
    that drifts from what the test expects fails here rather than testing something else."""
    text = template.read_text()
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"{template} no longer contains {old!r}")
        text = text.replace(old, new)
    return text


def certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A new CA and a server certificate it issued for ``host`` (an IP address):
    (CA certificate, server certificate, server key), as PEM files in ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker test CA")])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True,
              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName(
                  [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Nginx:
    """nginx in the foreground with ``prefix`` as its directory (pid, logs, temporary files),
    serving ``site`` (the text of a file that belongs in the http block) on 127.0.0.1:port."""

    def __init__(self, prefix: Path, site: str, port: int) -> None:
        self.prefix = prefix
        self.port = port
        (prefix / "site.conf").write_text(site)
        temp = prefix / "temp"
        temp.mkdir()
        # As root, the workers would switch to nobody, who cannot enter the test's directory.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
        (prefix / "nginx.conf").write_text(
            f"daemon off;\n{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"    access_log {prefix}/access.log;\n"
            + "".join(f"    {kind}_temp_path {temp}/{kind};\n"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            + f"    include {prefix}/site.conf;\n}}\n")
        self._output = (prefix / "nginx.out").open("w")
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf")],
            stdout=self._output, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._output.close()
                raise RuntimeError(f"nginx exited ({self.proc.returncode}): {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port}: {self.log()}")

    def log(self) -> str:
        """What nginx wrote to its console and its error log."""
        parts = [self.prefix / "nginx.out", self.prefix / "error.log"]
        return "\n".join(p.read_text() for p in parts if p.exists())

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown) to this nginx's master, which ends its workers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._output.close()
