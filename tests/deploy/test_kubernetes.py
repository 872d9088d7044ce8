"""deploy/kubernetes: every manifest, and the Helm chart rendered, checked without a cluster.

Each object is validated against the Kubernetes object schemas (the ``kubernetes``
client's models, see ``k8s_check.py``), then for what the schemas can't see: that
selectors pick the pods, that probes hit the dashboard's ``/health``, that the secret reaches
``SHOAL_AUTH_TOKEN`` from the Secret, that every ``$(VAR)`` in the arguments is
defined, that the resource limits reach ``--nthreads``/``--memory-limit``, and that the
arguments are ones ``shoal scheduler``/``shoal worker`` accept.
"""

from __future__ import annotations

import base64
import operator
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
import pytest

pytest.importorskip("kubernetes")

from k8s_check import ChartError, check_object, load_manifests, render_chart

from shoal import Client, Security
from shoal.cli.addresses import resolve_cli_addresses
from shoal.cli.scheduler import scheduler as scheduler_command
from shoal.cli.worker import worker as worker_command

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes" / "manifests"
CHART = ROOT / "deploy" / "kubernetes" / "helm" / "shoal"
#: what the downward API and the pod give, for checking arguments
POD_ENV = {"POD_NAME": "shoal-worker-0", "POD_IP": "10.1.2.3"}


def objects_of(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [obj for objs in rendered.values() for obj in objs]


def by_kind(objs: list[dict[str, Any]], kind: str, component: str | None = None) -> Any:
    found = [
        o
        for o in objs
        if o["kind"] == kind
        and (
            component is None or o["metadata"]["labels"]["app.kubernetes.io/component"] == component
        )
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (c,) = containers
    return c


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in container arguments."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)


def container_env(c: dict[str, Any]) -> dict[str, str]:
    """The container's variables with made-up values for those the kubelet fills in."""
    env = dict(POD_ENV)
    for var in c.get("env", []):
        ref = var.get("valueFrom", {}).get("resourceFieldRef")
        if ref is not None:
            env[var["name"]] = "2" if ref["resource"] == "limits.cpu" else "4294967296"
        elif "value" in var:
            env[var["name"]] = var["value"]
    return env


def check_cluster(objs: list[dict[str, Any]], secret_name: str) -> None:
    """The checks beyond the schemas (see the module docstring)."""
    for obj in objs:
        assert check_object(obj) == [], obj["metadata"]["name"]
    sched = by_kind(objs, "Deployment", "scheduler")
    workers = by_kind(objs, "Deployment", "worker")
    service = by_kind(objs, "Service", "scheduler")

    for dep in (sched, workers):
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # the image's user (Dockerfile: USER 1000), and the secret readable by it
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 1000
        c = container(dep)
        # the secret, from the Secret: through the environment (shoal refuses token
        # files others may read, and Secret volumes are group-readable)
        (auth,) = [v for v in c["env"] if v["name"] == "SHOAL_AUTH_TOKEN"]
        assert auth["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": "token"}
        # every volume mounted exists, and every volume is mounted
        volumes = {v["name"] for v in pod["spec"]["volumes"]}
        assert {m["name"] for m in c["volumeMounts"]} == volumes
        # every $(VAR) is defined, else Kubernetes passes it through verbatim
        env = container_env(c)
        for arg in c["args"]:
            for var in re.findall(r"\$\((\w+)\)", arg):
                assert var in env, f"{arg}: ${var} is not in the container's env"

    # the Service selects the scheduler pod and exposes its comm and dashboard ports
    pod_labels = sched["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    c = container(sched)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert {p["port"] for p in service["spec"]["ports"]} == {8786, 8787}

    # the scheduler's probes ask the dashboard's /health, on the port it serves
    ctx = scheduler_command.make_context("scheduler", list(c["args"][1:]))
    assert c["args"][0] == "scheduler"
    dashboard_port = int(ctx.params["dashboard_address"].rsplit(":", 1)[1])
    assert ports["http-dashboard"] == dashboard_port == 8787
    assert ports["tcp-comm"] == ctx.params["port"] == 8786
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http-dashboard"}

    # workers: the arguments parse, join the Service, and advertise the pod's IP
    w = container(workers)
    env = container_env(w)
    args = [expand(a, env) for a in w["args"]]
    assert args[0] == "worker"
    wctx = worker_command.make_context("worker", args[1:])
    p = wctx.params
    svc = service["metadata"]["name"]
    assert p["scheduler_address"] == f"tcp://{svc}:8786"
    bind, contact = resolve_cli_addresses(
        host=p["host"],
        port=p["worker_port"],
        interface=p["interface"],
        protocol=p["protocol"],
        listen_address=p["listen_address"],
        contact_address=p["contact_address"],
        default_port=0,
        port_option="--worker-port",
    )
    worker_ports = {q["name"]: q["containerPort"] for q in w["ports"]}
    assert (bind.host, bind.port) == ("0.0.0.0", worker_ports["tcp-worker"])
    assert contact == f"tcp://{POD_ENV['POD_IP']}:{worker_ports['tcp-worker']}"
    assert p["nanny_port"] == worker_ports["tcp-nanny"]
    assert p["nanny"] is True
    # resources: the limits are what --nthreads and --memory-limit read
    refs = {
        v["name"]: v["valueFrom"]["resourceFieldRef"]
        for v in w["env"]
        if "resourceFieldRef" in v.get("valueFrom", {})
    }
    assert refs["WORKER_NTHREADS"] == {
        "containerName": w["name"],
        "resource": "limits.cpu",
        "divisor": "1",
    }
    assert refs["WORKER_MEMORY_LIMIT"]["resource"] == "limits.memory"
    assert "--nthreads=$(WORKER_NTHREADS)" in w["args"]
    assert "--memory-limit=$(WORKER_MEMORY_LIMIT)" in w["args"]
    assert set(w["resources"]["limits"]) == {"cpu", "memory"}
    assert w["resources"]["requests"] == w["resources"]["limits"]  # Guaranteed QoS
    # results spill to the scratch volume
    scratch = {m["mountPath"] for m in w["volumeMounts"]}
    assert p["local_directory"] in scratch


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    rendered = load_manifests(MANIFESTS)
    assert set(rendered) == {"scheduler.yaml", "worker.yaml"}
    check_cluster(objects_of(rendered), secret_name="shoal-auth")


def test_the_helm_chart_renders_valid_objects() -> None:
    rendered = render_chart(CHART, {"auth": {"token": "s3cret"}}, release="prod")
    objs = objects_of(rendered)
    assert {o["kind"] for o in objs} == {"Deployment", "Service", "Secret"}
    secret = by_kind(objs, "Secret")
    assert secret["metadata"]["name"] == "prod-auth"
    assert base64.b64decode(secret["data"]["token"]) == b"s3cret"
    check_cluster(objs, secret_name="prod-auth")
    image = container(by_kind(objs, "Deployment", "worker"))["image"]
    assert image == "shoal:0.1.0"  # the chart's appVersion when image.tag is empty


def test_the_helm_chart_maps_values_to_the_objects() -> None:
    values = {
        "auth": {"existingSecret": "team-secret"},
        "image": {"repository": "registry.example/shoal", "tag": "1.2"},
        "worker": {
            "replicas": 7,
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi"},
                "limits": {"cpu": "4", "memory": "16Gi"},
            },
        },
    }
    objs = objects_of(render_chart(CHART, values, release="big"))
    assert {o["kind"] for o in objs} == {"Deployment", "Service"}  # no Secret of its own
    check_cluster(objs, secret_name="team-secret")
    workers = by_kind(objs, "Deployment", "worker")
    assert workers["spec"]["replicas"] == 7
    w = container(workers)
    assert w["image"] == "registry.example/shoal:1.2"
    assert w["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert w["args"][1] == "tcp://big-scheduler:8786"


def test_the_helm_chart_refuses_to_install_without_a_secret() -> None:
    with pytest.raises(ChartError, match=r"set auth\.token to a long random secret"):
        render_chart(CHART)


def test_the_checker_catches_what_it_should() -> None:
    """The validation is not vacuous: typos, wrong types and missing fields fail."""
    (dep,) = load_manifests(MANIFESTS)["worker.yaml"]
    spec = dep["spec"]["template"]["spec"]
    spec["containers"][0]["imagePullPolicyy"] = "Always"
    spec["containers"][0]["ports"][0]["containerPort"] = "8788"
    assert sorted(check_object(dep)) == sorted(
        [
            "Deployment.spec.template.spec.containers[0]: 'imagePullPolicyy' is not a field "
            "of V1Container",
            "Deployment.spec.template.spec.containers[0].ports[0].containerPort: "
            "expected int, got str",
        ]
    )
    (dep,) = load_manifests(MANIFESTS)["worker.yaml"]
    del dep["spec"]["template"]["spec"]["containers"][0]["name"]
    (error,) = check_object(dep)
    # (older clients: "Invalid value for `name`, must not be `None`"; newer: pydantic's)
    assert "name" in error
    assert "must not be `None`" in error or "validation error for V1Container" in error
    assert check_object({"apiVersion": "v1", "kind": "Pod"}) == [
        "unexpected kind ('v1', 'Pod'): add its model to MODELS"
    ]


def test_the_worker_arguments_fail_loudly_when_a_flag_is_unknown() -> None:
    with pytest.raises(click.NoSuchOption):
        worker_command.make_context("worker", ["tcp://s:8786", "--no-such-flag"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, seen: list[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if m := re.search(pattern, line):
            return m.group(1)
    raise AssertionError(f"{pattern!r} not printed:\n{''.join(seen)}")


def test_the_manifests_commands_run_a_cluster(tmp_path: Path) -> None:
    """The containers' exact arguments, run here: the pod's IP is 127.0.0.1, the
    scratch volume a temporary directory, and the ports free ones."""
    objs = objects_of(load_manifests(MANIFESTS))
    sched = container(by_kind(objs, "Deployment", "scheduler"))
    worker = container(by_kind(objs, "Deployment", "worker"))
    token = "s3cret-token-for-the-test"
    ports = {p: str(_free_port()) for p in ("8786", "8787", "8788", "8789")}

    def localize(args: list[str], env: dict[str, str]) -> list[str]:
        out = []
        for arg in args:
            arg = expand(arg, env)
            arg = arg.replace("/scratch", str(tmp_path)).replace("shoal-scheduler", "127.0.0.1")
            for port, free in ports.items():
                arg = arg.replace(f":{port}", f":{free}").replace(f"={port}", f"={free}")
            out.append(arg)
        return out

    cmd = [sys.executable, "-m", "shoal.cli.main"]
    # what secretKeyRef gives the containers
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SHOAL_AUTH_TOKEN": token}
    procs = []
    seen: list[str] = []
    try:
        s = subprocess.Popen(
            [*cmd, *localize(sched["args"], {})],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        procs.append(s)
        _wait_for_line(s, r"Scheduler at: (\S+)", seen)
        # the probe
        url = f"http://127.0.0.1:{ports['8787']}/health"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and r.read() == b"ok"
        wenv = {**container_env(worker), "POD_IP": "127.0.0.1", "WORKER_MEMORY_LIMIT": "1e9"}
        w = subprocess.Popen(
            [*cmd, *localize(worker["args"], wenv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        procs.append(w)
        advertised = _wait_for_line(w, r"Worker at: (\S+)", seen)
        assert advertised == f"tcp://127.0.0.1:{ports['8788']}"
        security = Security(token=token)
        address = f"tcp://127.0.0.1:{ports['8786']}"
        with Client(address, security=security, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=30)
            (info,) = c.scheduler_info()["workers"].values()
            assert info["nthreads"] == 2  # limits.cpu
            assert info["nanny"] == f"tcp://127.0.0.1:{ports['8789']}"
            assert c.submit(operator.add, 40, 2).result(timeout=30) == 42
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            assert p.stdout is not None
            p.stdout.close()
