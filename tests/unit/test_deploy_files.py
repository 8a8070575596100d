"""The Dockerfile, the compose files and the Helm chart cannot be run here (no Docker engine,
no Kubernetes); what can be checked without one is checked: every setting they name exists and
loads, every command they run is one the broker has, the Dockerfile as BuildKit's parser reads
it, the load balancer's nginx site as `nginx -t` reads it, and the chart as Helm itself renders
and lints it, each object valid against Kubernetes' schemas."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from broker import settings
from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {env for _, env, _, _ in settings.describe()} | {"BROKER_CONFIG"}


def test_dockerfile_names_real_settings_and_commands() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for name in re.findall(r"\bBROKER_[A-Z_]+", text):
        assert name in KNOWN, name
    assert 'ENTRYPOINT ["broker"]' in text and 'CMD ["serve"]' in text
    assert "COPY broker ./broker" in text
    # What the build needs of the checkout: pyproject's readme and license-files among them.
    copied = re.search(r"^COPY pyproject\.toml (.*) \./$", text, re.MULTILINE)
    assert copied, "the Dockerfile copies pyproject.toml"
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name in [project["readme"], *project["license-files"]]:
        assert name in copied.group(1).split(), name
    env = dict(re.findall(r"(BROKER_[A-Z_]+)=(\S+)", text))
    settings.load(None, environ=env)  # the image's settings load


def test_the_build_context_leaves_out_the_local_tree_but_not_the_sources() -> None:
    """.dockerignore keeps the virtualenv, git and caches out of `docker build .`, and nothing
    the Dockerfile copies is among what it leaves out."""
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for local in (".git", ".venv"):
        assert local in ignored, local
    copied = [name for line in re.findall(r"^COPY (?!--from)(.*) \S+$",
                                          (ROOT / "Dockerfile").read_text(), re.MULTILINE)
              for name in line.split()]
    assert "broker" in copied and "pyproject.toml" in copied
    for name in copied:
        for pattern in ignored:
            assert not Path(name).match(pattern.removeprefix("**/")), (name, pattern)


def test_compose_file() -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = doc["services"]
    broker = services["broker"]
    env = broker["environment"]
    assert set(env) <= KNOWN
    workers = broker["command"][broker["command"].index("--workers") + 1]
    settings.load(None, environ={**env, "BROKER_SERVER_WORKERS": workers})
    result = CliRunner().invoke(main, [*broker["command"], "--help"])
    assert result.exit_code == 0, result.output
    assert set(broker["depends_on"]) == {"postgres", "redis"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in \
        redis_command
    assert services["redis"]["volumes"] == ["redis-data:/data"] and "redis-data" in doc["volumes"]


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    """setuptools deprecates the table form of project.license (builds stop after February
    2027): an SPDX string, the file beside it, and a setuptools that reads both (77+)."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    for name in project["project"]["license-files"]:
        assert "Apache License" in (root / name).read_text()
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_starting_the_cli_prints_no_warning() -> None:
    """Every CLI start printed cryptography's DSA deprecation (idp/metadata.py named its DSA
    classes at import): the installed command, in a fresh interpreter that turns every warning
    into an error, starts clean."""
    import subprocess
    import sys

    command = Path(sys.executable).parent / "broker"
    done = subprocess.run([sys.executable, "-W", "error", str(command), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Usage" in done.stdout


# -- the Dockerfile, as BuildKit parses it --------------------------------------------------------


def _dockerfile() -> list[Any]:
    try:
        import dockerfile
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        from tests.helpers import unavailable

        unavailable("dockerfile (BuildKit's parser)", str(exc))
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def test_the_image_is_multi_stage_non_root_and_checks_its_health() -> None:
    commands = _dockerfile()
    stages = [c for c in commands if c.cmd == "FROM"]
    assert len(stages) == 2 and stages[0].value[1:] == ("AS", "build")
    final = commands[commands.index(stages[-1]):]
    by = {c.cmd: c for c in final}
    # Numeric, so that Kubernetes' runAsNonRoot can check it; the chart runs as the same ids.
    assert by["USER"].value == ("10001:10001",)
    assert "--uid 10001" in by["RUN"].value[0] and "--gid 10001" in by["RUN"].value[0]
    assert [c.cmd for c in final].index("USER") < [c.cmd for c in final].index("ENTRYPOINT")
    assert any("--from=build" in c.flags for c in final if c.cmd == "COPY")
    assert not any(c.cmd == "RUN" and "pip install" in c.value[0] for c in final)
    assert by["STOPSIGNAL"].value == ("SIGTERM",)
    health = by["HEALTHCHECK"]
    assert health.value[0] == "CMD" and "/readyz" in health.value[-1]
    assert {f.split("=")[0] for f in health.flags} >= {"--interval", "--timeout",
                                                       "--start-period"}
    assert all("--no-cache-dir" in c.value[0] for c in commands
               if c.cmd == "RUN" and "pip install" in c.value[0])


# -- the cluster with compose ---------------------------------------------------------------------

CLUSTER = ROOT / "deploy" / "compose.cluster.yaml"
LB_CONF = ROOT / "deploy" / "nginx" / "broker-lb.conf"
NODES = ("broker-1", "broker-2", "broker-3")


def test_the_compose_cluster_has_three_nodes_behind_nginx_on_one_keyring() -> None:
    doc = yaml.safe_load(CLUSTER.read_text())
    services = doc["services"]
    assert set(services) == {"postgres", "redis", "init", *NODES, "lb"}
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]
    # Redis keeps its data across a restart, on a volume, and never evicts a key.
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in \
        redis_command
    assert services["redis"]["volumes"] == ["redis-data:/data"] and "redis-data" in doc["volumes"]
    init = services["init"]
    assert "broker init --json" in " ".join(init["entrypoint"])
    assert "test -f /var/lib/broker/keyring.json" in " ".join(init["entrypoint"])
    assert "keyring:/var/lib/broker" in init["volumes"]
    workers = []
    for name in NODES:
        node = services[name]
        env = node["environment"]
        assert set(env) <= KNOWN, set(env) - KNOWN
        assert env == init["environment"]  # one set of settings for every process
        assert node["volumes"] == ["keyring:/var/lib/broker:ro"]  # one keyring, read-only
        assert node["read_only"] is True and node["cap_drop"] == ["ALL"]
        assert node["restart"] == "on-failure"  # a failed start exits 3, a stop 0
        assert node["depends_on"]["init"] == {"condition": "service_completed_successfully"}
        assert node["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert node["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert "/readyz" in " ".join(node["healthcheck"]["test"])
        command = node["command"]
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, result.output
        count = command[command.index("--workers") + 1] if "--workers" in command else "1"
        workers.append(int(count))
        loaded = settings.load(None, environ={**env, "BROKER_SERVER_WORKERS": count})
        # nginx's address (on the compose network) is a trusted proxy.
        assert loaded.server.trusted_proxies == (doc["networks"]["cluster"]["ipam"]["config"]
                                                 [0]["subnet"],)
        grace = int(node["stop_grace_period"].rstrip("s"))
        assert grace > loaded.server.shutdown_timeout_seconds
    assert sorted(workers) == [1, 1, 2]
    lb = services["lb"]
    assert lb["volumes"] == ["./nginx/broker-lb.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert {n: {"condition": "service_healthy"} for n in NODES} == lb["depends_on"]
    # The nodes of the nginx site are exactly the compose services.
    upstream = re.findall(r"^\s*server (\S+):8000 ", LB_CONF.read_text(), re.MULTILINE)
    assert upstream == list(NODES)


def _lb_text(directory: Path, listen: int = 18080, nodes: tuple[int, ...] = (8001, 8002, 8003),
             front: str = "") -> str:
    """The LB site with its documented placeholders replaced (nginx -t resolves upstream host
    names, which exist only on the compose network): the nodes, the address it listens on,
    the access log's file, and, when ``front`` is given, that address as the TLS front."""
    from tests.nginx import render

    replacements = {f"server {n}:8000 ": f"server 127.0.0.1:{port} "
                    for n, port in zip(NODES, nodes, strict=True)}
    replacements["listen 80;"] = f"listen 127.0.0.1:{listen};"
    replacements["access_log /var/log/nginx/access.log "] = f"access_log {directory}/lb.log "
    if front:
        replacements["# 192.0.2.10 1;"] = f"{front} 1;"
    return render(LB_CONF, replacements)


def _lb_site(directory: Path) -> str:
    path = directory / "site.conf"
    path.write_text(_lb_text(directory))
    return str(path)


def _nginx_t(site: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    from tests.nginx import nginx_binary

    (prefix / "logs").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
                    "events {}\nhttp {\n" f"    include {site};\n}}\n")
    return subprocess.run([nginx_binary(), "-t", "-p", f"{prefix}/", "-c", str(conf)],
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_load_balancer_site_passes_nginx_t(tmp_path: Path) -> None:
    site = _lb_site(tmp_path)
    done = _nginx_t(site, tmp_path)
    assert done.returncode == 0, done.stderr
    text = Path(site).read_text()
    # Retries: connection errors only, never a request already sent (see the file's comment).
    assert re.findall(r"proxy_next_upstream (.*);", text) == ["error", "error"]
    assert "non_idempotent" not in text.split("upstream broker_nodes")[1]
    assert text.count("proxy_set_header Host $http_host;") == 2
    assert "underscores_in_headers on;" in text
    assert re.search(r"location = /federation \{\s*access_log off;", text)
    # The control: a broken copy of the same site is refused by the same check.
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("proxy_next_upstream error;", "proxy_next_upstream errors;"))
    refused = _nginx_t(str(broken), tmp_path)
    assert refused.returncode != 0 and 'invalid value "errors"' in refused.stderr


class _Upstream:
    """A broker node's stand-in behind the LB site: a real HTTP server that answers every GET
    with 200 and, as JSON, the X-Forwarded-* headers nginx sent it."""

    def __init__(self) -> None:
        from tests.helpers import serve_json

        self.server = serve_json(lambda request: {name: request.headers.get(name) for name in (
            "X-Forwarded-Proto", "X-Forwarded-For")})
        self.port = int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    yield server
    server.close()


def _run_lb(directory: Path, upstream: _Upstream, front: str = "",
            change: Callable[[str], str] = str) -> Any:
    """The LB site, every node ``upstream``, under a real nginx of its own in ``directory``
    (``change``: what to alter in the site's text first)."""
    from tests.helpers import free_port
    from tests.nginx import Nginx

    directory.mkdir()
    port = free_port()
    return Nginx(directory, change(_lb_text(directory, port, (upstream.port,) * 3, front)), port)


# What a client sends in query strings that nginx must not write down: a presigned URL's
# signature and token, an identity token and a SAML assertion sent by GET, an OIDC callback's
# code and state.
QUERY_SECRETS = {"X-Amz-Signature": "5ec2e7" * 10, "X-Amz-Security-Token": "FwoGZXIvYXdzEDx" * 4,
                 "WebIdentityToken": "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln",
                 "SAMLAssertion": "PHNhbWxwOlJlc3BvbnNlIHNlY3JldA"}
CALLBACK_SECRETS = {"code": "c0de-5ec2e7-4u7h", "state": "57a7e-5ec2e7"}


def _send_secrets(nginx: Any) -> None:
    import httpx

    base = f"http://127.0.0.1:{nginx.port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        api = client.get("/", params={"Action": "AssumeRoleWithWebIdentity", **QUERY_SECRETS},
                         headers={"Referer": "https://app.example.com/?code=r3f3r3r-5ec2e7"})
        assert api.status_code == 200
        callback = client.get("/start/d-1234567890/oidc/callback", params=CALLBACK_SECRETS)
        assert callback.status_code == 200


def test_the_load_balancer_logs_no_query_string(tmp_path: Path, upstream: _Upstream) -> None:
    """The LB site under the real nginx: its access lines have each request's method, path and
    status, and none of the secrets its query string (or Referer) carried."""
    nginx = _run_lb(tmp_path / "lb", upstream)
    try:
        _send_secrets(nginx)
    finally:
        nginx.stop()
    log = (tmp_path / "lb" / "lb.log").read_text()
    assert '"GET / HTTP/1.1" 200 ' in log  # the control: the requests are logged
    assert '"GET /start/d-1234567890/oidc/callback HTTP/1.1" 200 ' in log
    for secret in (*QUERY_SECRETS.values(), *CALLBACK_SECRETS.values(), "r3f3r3r"):
        assert secret not in log
    assert "?" not in log and "Action=" not in log
    # The same site with nginx's default line instead of broker_lb, run the same way, writes
    # them all: this is what the test would see if the format were lost.
    nginx = _run_lb(tmp_path / "combined", upstream,
                    change=lambda text: text.replace("/lb.log broker_lb;", "/lb.log;"))
    try:
        _send_secrets(nginx)
    finally:
        nginx.stop()
    leaked = (tmp_path / "combined" / "lb.log").read_text()
    for secret in (*QUERY_SECRETS.values(), *CALLBACK_SECRETS.values()):
        assert secret in leaked


def _forwarded(nginx: Any) -> dict[str, str]:
    import httpx

    reply = httpx.get(f"http://127.0.0.1:{nginx.port}/", timeout=10, headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert reply.status_code == 200
    return dict(reply.json())


def test_the_load_balancer_believes_forwarded_headers_only_from_its_tls_front(
        tmp_path: Path, upstream: _Upstream) -> None:
    """A client that sends X-Forwarded-Proto: https and an X-Forwarded-For of its choosing:
    by default the nodes are told the scheme nginx received (http) and the address it saw;
    with the client's address listed as the TLS front, the same request's headers are passed
    on, the front's address after the one it forwarded."""
    nginx = _run_lb(tmp_path / "alone", upstream)
    try:
        assert _forwarded(nginx) == {"X-Forwarded-Proto": "http",
                                     "X-Forwarded-For": "127.0.0.1"}
    finally:
        nginx.stop()
    nginx = _run_lb(tmp_path / "fronted", upstream, front="127.0.0.1")
    try:
        assert _forwarded(nginx) == {"X-Forwarded-Proto": "https",
                                     "X-Forwarded-For": "203.0.113.9, 127.0.0.1"}
    finally:
        nginx.stop()


# -- the Helm chart, rendered and linted by Helm's own engine -------------------------------------

CHART = ROOT / "deploy" / "helm" / "broker"
KUBERNETES = "1.30.0"
SECRETS = {"keyring": '{"keys": []}', "databaseUrl": "postgresql://broker:pw@db:5432/broker",
           "ephemeralUrl": "redis://redis:6379/0"}
PRODUCTION = {
    "image": {"repository": "registry.example.com/broker", "tag": "1.2.3"},
    "workers": 4,
    "shutdownTimeoutSeconds": 45,
    "terminationGracePeriodSeconds": 75,
    "preStopSleepSeconds": 15,
    "secret": {"existingSecret": "broker-prod"},
    "autoscaling": {"minReplicas": 4, "maxReplicas": 20, "targetCPUUtilizationPercentage": 60},
    "podDisruptionBudget": {"minAvailable": 3},
    "networkPolicy": {"ingressFrom": [{"podSelector": {"matchLabels": {"app": "gateway"}}}]},
    "metrics": {"enabled": True, "port": 9102,
                "scrapeFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]},
    "config": '[server]\npublic_url = "https://sts.prod.example.com"\n'
              'trusted_proxies = ["10.20.0.0/16"]\n\n[iam]\npolicy_cache_seconds = 5\n',
}


def _helm() -> Any:
    try:
        import helm_python
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        from tests.helpers import unavailable

        unavailable("helm-python-sdk (Helm's engine)", str(exc))
    return helm_python


def _render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every object the chart renders with ``values``, by kind, each validated against
    Kubernetes' schema for its apiVersion and kind (strict: no unknown fields)."""
    import kubernetes_validate

    helm = _helm()
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="broker", namespace="iam", is_install=True)
    objects: dict[str, dict[str, Any]] = {}
    for name, text in rendered.items():
        if not name.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                kubernetes_validate.validate(doc, KUBERNETES, strict=True)
                assert doc["kind"] not in objects, doc["kind"]
                objects[doc["kind"]] = doc
    return objects


def _container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("values", [{"secret": SECRETS}, PRODUCTION],
                         ids=["defaults", "production"])
def test_the_chart_renders_valid_kubernetes_objects(values: dict[str, Any],
                                                    tmp_path: Path) -> None:
    objects = _render(values)
    assert set(objects) == {"ConfigMap", "Deployment", "Service", "ServiceAccount",
                            "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} | (
        set() if "existingSecret" in values["secret"] else {"Secret"})
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(objects)
    # Probes.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0] == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    # Security context: the image's user, read-only root, nothing more than it needs.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001 == pod["securityContext"]["runAsGroup"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True, "privileged": False,
                                            "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    # The settings the pod starts with: the ConfigMap's file under the chart's variables.
    env = _env(container)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, config_name = env["BROKER_CONFIG"].rsplit("/", 1)
    assert volumes[mounts[config_dir]["name"]]["configMap"]["name"] == \
        objects["ConfigMap"]["metadata"]["name"]
    (tmp_path / config_name).write_text(objects["ConfigMap"]["data"][config_name])
    secret_name = values["secret"].get("existingSecret") or "broker"
    for var, key in (("BROKER_STORE_DATABASE_URL", "database-url"),
                     ("BROKER_STORE_EPHEMERAL_URL", "ephemeral-url")):
        assert env[var] == {"secretKeyRef": {"name": secret_name, "key": key}}
    plain = {k: v for k, v in env.items() if isinstance(v, str) and k != "BROKER_CONFIG"}
    assert set(plain) <= KNOWN
    loaded = settings.load(tmp_path / config_name, environ={
        **plain, "BROKER_STORE_DATABASE_URL": SECRETS["databaseUrl"],
        "BROKER_STORE_EPHEMERAL_URL": SECRETS["ephemeralUrl"]})
    assert loaded.server.workers == values.get("workers", 2)
    assert loaded.server.public_url.startswith("https://sts.")
    # The keyring: the Secret's keyring.json, mounted as a directory (no subPath, so that a
    # rotated keyring reaches the running pods) exactly where keyring.path points.
    keyring_dir = str(loaded.keyring_path.parent)
    assert "subPath" not in mounts[keyring_dir] and mounts[keyring_dir]["readOnly"] is True
    keyring_volume = volumes[mounts[keyring_dir]["name"]]["secret"]
    assert keyring_volume["secretName"] == secret_name
    assert keyring_volume["items"] == [{"key": "keyring.json", "path": loaded.keyring_path.name}]
    assert str(loaded.data_dir) in mounts and "/tmp" in mounts  # the only writable places
    # Shutdown: the endpoints drain (preStop), then uvicorn's timeout, within the grace period.
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert sleep == values.get("preStopSleepSeconds", 10)
    assert loaded.server.shutdown_timeout_seconds == values.get("shutdownTimeoutSeconds", 30)
    assert pod["terminationGracePeriodSeconds"] > sleep + loaded.server.shutdown_timeout_seconds
    # Disruptions and scaling.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert objects["Service"]["spec"]["selector"] == selector
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == values.get("podDisruptionBudget", {}).get("minAvailable", 2)
    assert pdb["selector"]["matchLabels"] == selector
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert hpa["minReplicas"] >= pdb["minAvailable"] + 1  # a node drain can always proceed
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["minReadySeconds"] >= 5  # above the LB's fail_timeout
    # Network: in only to the broker's port from the selector; out only to what it needs.
    policy = objects["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress, *scrape = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == values.get("networkPolicy", {}).get(
        "ingressFrom", [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}])
    # Metrics: on their own port (never the public one), open only to the scraper.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if "metrics" in values:
        assert loaded.metrics.enabled and loaded.metrics.port == ports["metrics"] == 9102
        assert loaded.metrics.port != loaded.server.port
        assert scrape == [{"from": values["metrics"]["scrapeFrom"],
                           "ports": [{"port": "metrics", "protocol": "TCP"}]}]
        assert {p["name"] for p in objects["Service"]["spec"]["ports"]} == {"http", "metrics"}
    else:
        assert not loaded.metrics.enabled and scrape == [] and set(ports) == {"http"}
    assert sorted(p["port"] for rule in policy["egress"] for p in rule["ports"]) == \
        [53, 53, 443, 5432, 6379]
    # E-mail: its URL only ever from the Secret, and only when the Secret has it.
    assert env["BROKER_SSO_SMTP_URL"] == {"secretKeyRef": {
        "name": secret_name, "key": "smtp-url", "optional": True}}
    assert "smtp-url" not in objects.get("Secret", {}).get("data", {})
    # The install's notes name the URL clients use.
    assert f"AWS_ENDPOINT_URL={loaded.public_url}\n" in _notes(values)


def _notes(values: dict[str, Any]) -> str:
    helm = _helm()
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="broker", namespace="iam", is_install=True)
    (notes,) = [text for name, text in rendered.items() if name.endswith("/NOTES.txt")]
    return str(notes)


def _egress(values: dict[str, Any]) -> dict[int, list[Any]]:
    """The NetworkPolicy's egress rules by port: where each lets the pods connect."""
    rules = _render(values)["NetworkPolicy"]["spec"]["egress"]
    return {port["port"]: rule.get("to", "anywhere") for rule in rules
            for port in rule["ports"]}


DATABASE_OUTSIDE = [{"ipBlock": {"cidr": "10.1.2.0/24"}}]
REDIS_ELSEWHERE = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}},
                    "podSelector": {"matchLabels": {"app": "redis"}}}]
ISSUERS = [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
MAIL_SERVER = [{"ipBlock": {"cidr": "192.0.2.25/32"}}]
MAIL_CONFIG = ('[server]\npublic_url = "https://sts.example.com"\n\n'
               '[sso]\nsmtp_from = "broker@example.com"\n')


@pytest.mark.parametrize(("network", "expected"), [
    ({"postgres": {"port": 6432, "to": DATABASE_OUTSIDE}}, {6432: DATABASE_OUTSIDE}),
    ({"redis": {"port": 6380, "to": REDIS_ELSEWHERE}}, {6380: REDIS_ELSEWHERE}),
    ({"identityProviders": {"port": 8443, "to": ISSUERS}}, {8443: ISSUERS}),
    ({"identityProviders": {"to": []}}, {443: None}),  # static JWKS only: no rule
    ({"smtp": {"port": 465, "to": MAIL_SERVER}}, {465: MAIL_SERVER}),
], ids=["postgres-outside", "redis-elsewhere", "issuers", "no-issuers", "smtp"])
def test_each_egress_value_renders_its_rule(network: dict[str, Any],
                                            expected: dict[int, Any]) -> None:
    egress = _egress({"secret": SECRETS, "networkPolicy": network})
    assert egress[53] == "anywhere"  # DNS, to any resolver
    for port, to in expected.items():
        assert egress.get(port) == to, egress
    if 587 not in expected:
        assert 587 not in egress  # no SMTP rule unless it is asked for


def test_the_chart_sends_mail_through_the_secret_and_its_own_egress_rule(
        tmp_path: Path) -> None:
    """e-mail on: the SMTP URL (it holds a password) in the Secret, the From address in config,
    and a rule to the mail server; the pod's settings load with the URL from the Secret."""
    url = "smtp+starttls://broker:pw@mail.example.com:587"
    values = {"secret": {**SECRETS, "smtpUrl": url}, "config": MAIL_CONFIG,
              "networkPolicy": {"smtp": {"to": MAIL_SERVER}}}
    objects = _render(values)
    assert base64.b64decode(objects["Secret"]["data"]["smtp-url"]).decode() == url
    assert _egress(values)[587] == MAIL_SERVER
    (tmp_path / "broker.toml").write_text(objects["ConfigMap"]["data"]["broker.toml"])
    loaded = settings.load(tmp_path / "broker.toml", environ={"BROKER_SSO_SMTP_URL": url})
    assert (loaded.sso.smtp_url, loaded.sso.smtp_from) == (url, "broker@example.com")


def test_the_chart_lints_clean() -> None:
    helm = _helm()
    for values in ({"secret": SECRETS}, PRODUCTION):
        report = helm.lint(str(CHART), values, strict=True, kube_version=KUBERNETES)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] > 1] == [], report


def test_the_chart_refuses_what_would_break_a_pod() -> None:
    """No keyring (the pods could open no stored secret), and a grace period too short for
    the drain and uvicorn's shutdown (requests in flight would be killed): each refused at
    render time, beside the honest values that render."""
    helm = _helm()
    assert _render({"secret": SECRETS})  # the control
    cases = [
        ({"secret": {**SECRETS, "keyring": ""}}, "secret.keyring"),
        ({"secret": SECRETS, "terminationGracePeriodSeconds": 40}, "terminationGracePeriodSeconds"),
        # Without it, every link and SAML endpoint would name http://0.0.0.0:8000.
        ({"secret": SECRETS, "config": "[log]\nlevel = \"info\"\n"}, "server.public_url"),
        ({"secret": SECRETS, "config": "[server\n"}, "config is not valid TOML"),
        # An empty "to" would open the port to every address.
        ({"secret": SECRETS, "networkPolicy": {"postgres": {"to": []}}},
         "networkPolicy.postgres.to"),
        ({"secret": SECRETS, "networkPolicy": {"redis": {"to": []}}}, "networkPolicy.redis.to"),
        # E-mail on, and no way out to the mail server: every invitation would fail.
        ({"secret": SECRETS, "config": MAIL_CONFIG}, "networkPolicy.smtp.to"),
        ({"secret": {**SECRETS, "smtpUrl": "smtps://b:pw@mail.example.com:465"}},
         "networkPolicy.smtp.to"),
    ]
    for values, message in cases:
        with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError) as info:
            chart.render(values, name="broker", namespace="iam", is_install=True)
        assert message in str(info.value)
