"""The production stack as deploy/ describes it, on loopback: nginx (TLS) in front of two daphnes and a qcluster.

nginx runs deploy/nginx/fleet.conf with only its ports and paths changed; the service runs with debug
off, a real secret key and FLEET_TRUSTED_PROXIES set to loopback, as deploy/fleet.env.example says.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.servers import BASE_DIR, ServerProcess, child_env, free_port, wait_for

SITE_CONFIG = BASE_DIR / "deploy" / "nginx" / "fleet.conf"
NGINX = "/usr/sbin/nginx"
MIME_TYPES = "/etc/nginx/mime.types"


def install_nginx() -> str | None:
    """Debian's nginx, installed with apt-get when missing and possible; why not, otherwise."""
    if not os.path.exists(NGINX) and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive"
            " apt-get -o DPkg::Lock::Timeout=300 install -y -qq nginx",
            shell=True,
            timeout=900,
            capture_output=True,
        )
    if not os.path.exists(NGINX):
        return f"nginx is not installed at {NGINX} and could not be installed (needs root and apt-get)"
    if not shutil.which("openssl"):
        return "openssl is needed for the self-signed certificate"
    return None


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def site_config(ports: dict[str, int], cert: Path, key: Path, static: Path) -> str:
    """deploy/nginx/fleet.conf with ports and paths substituted; each must be found exactly as often as expected."""
    text = SITE_CONFIG.read_text()
    substitutions = [
        ("server 127.0.0.1:8001 ", f"server 127.0.0.1:{ports['daphne_a']} ", 1),
        ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{ports['daphne_b']} ", 1),
        ("listen 80;", f"listen 127.0.0.1:{ports['http']};", 1),
        ("listen [::]:80;", f"listen [::1]:{ports['http']};", 1),
        ("listen 443 ssl;", f"listen 127.0.0.1:{ports['https']} ssl;", 1),
        ("listen [::]:443 ssl;", f"listen [::1]:{ports['https']} ssl;", 1),
        ("/etc/ssl/fleet/fullchain.pem", str(cert), 1),
        ("/etc/ssl/fleet/privkey.pem", str(key), 1),
        ("/srv/fleet/var/static/", f"{static}/", 1),
    ]
    for old, new, count in substitutions:
        assert text.count(old) == count, f"deploy/nginx/fleet.conf no longer has {old!r} {count} time(s)"
        text = text.replace(old, new)
    return text


def main_config(directory: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf provides around a site, in the test's own directory."""
    temp = directory / "temp"
    temp.mkdir(exist_ok=True)
    paths = "\n".join(
        f"    {name}_temp_path {temp / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would run as nobody, who cannot read the test's private directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} notice;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    include {MIME_TYPES};\n    access_log {directory / 'access.log'};\n{paths}\n"
        f"    include {site};\n}}\n"
    )


class Stack:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = {name: free_port() for name in ("daphne_a", "daphne_b", "http", "https")}
        self.metrics_token = secrets.token_urlsafe(24)
        self.env = child_env(
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            FLEET_TRUSTED_PROXIES="127.0.0.1,::1",
            METRICS_BEARER_TOKEN=self.metrics_token,
            FLEET_VAR_DIR=str(directory / "var"),
            # Every acknowledged frame becomes a history row, so the test can find each one.
            TELEMETRY_SAMPLE_INTERVAL="0",
            DJANGO_LOG_LEVEL="WARNING",
        )
        self.daphnes: dict[str, ServerProcess] = {}
        self.qcluster: ServerProcess | None = None
        self.nginx: ServerProcess | None = None
        self.cert: Path | None = None

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.ports['https']}"

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.ports['https']}"

    def start(self) -> Stack:
        # Once per release in production; the manifest storage (debug off) needs it to render a page.
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=BASE_DIR, env=self.env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        self.qcluster = ServerProcess(
            [sys.executable, "-m", "fleet.qcluster"], self.env, self.directory / "qcluster.log"
        )
        for name in ("daphne_a", "daphne_b"):
            self.start_daphne(name, wait=False)
        for name in self.daphnes:
            self.daphnes[name].wait_http("/healthz", timeout=60)
        self.cert, key = self_signed_certificate(self.directory)
        site = self.directory / "fleet.conf"
        site.write_text(site_config(self.ports, self.cert, key, self.directory / "var" / "static"))
        conf = self.directory / "nginx.conf"
        conf.write_text(main_config(self.directory, site))
        checked = subprocess.run([NGINX, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        self.nginx = ServerProcess([NGINX, "-c", str(conf)], self.env, self.directory / "nginx.log")
        self.nginx.port = self.ports["https"]
        listening = wait_for(lambda: (self.directory / "nginx.pid").exists(), within=10)
        assert listening, (self.directory / "error.log").read_text()
        return self

    def start_daphne(self, name: str, wait: bool = True) -> ServerProcess:
        port = self.ports[name]
        server = ServerProcess(
            [sys.executable, "-m", "fleet.serve", "--bind", "127.0.0.1", "--port", str(port)],
            self.env,
            # A log per start: a restarted process must not overwrite what its predecessor said.
            self.directory / f"{name}-{len(list(self.directory.glob(f'{name}-*.log')))}.log",
        )
        server.port = port
        self.daphnes[name] = server
        if wait:
            server.wait_http("/healthz", timeout=60)
        return server

    def stop_daphne(self, name: str) -> int:
        """SIGTERM, as systemd stops a unit; its exit code."""
        server = self.daphnes[name]
        server.signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        server.stop()
        return code

    def stop(self) -> None:
        for server in [self.nginx, *self.daphnes.values(), self.qcluster]:
            if server is not None:
                server.stop()
