#!/usr/bin/env python3
"""Validates llmtap's Kubernetes manifests offline against the Kubernetes JSON schemas.

- deploy/kubernetes: every resource the kustomization lists, and the output of
  `kubectl kustomize` when kubectl is on PATH;
- deploy/helm/llmtap: `helm lint`, then the chart rendered by Helm's own engine (the
  helm-python-sdk package embeds Helm's Go SDK, no helm binary needed) with the default values
  and with each documented variant.

Runs with the Python of the tools environment `cargo xtask setup` creates (kubernetes-validate,
helm-python-sdk). Exits non-zero on the first invalid document.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

KUBERNETES_VERSION = "1.30.0"
DEPLOY = os.path.dirname(os.path.abspath(__file__))


def validate(paths):
    """kubernetes-validate --strict: unknown fields are errors too."""
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"),
        "--strict",
        "--kubernetes-version",
        KUBERNETES_VERSION,
        *paths,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0 or "ERROR" in result.stdout:
        sys.exit(f"invalid: {' '.join(paths)}")


# Custom resources (Prometheus Operator) have no schema in kubernetes-validate: their fields
# are checked by check_service_monitor instead.
CUSTOM_API_GROUPS = ("monitoring.coreos.com/",)


def check_metrics_endpoint(name, docs, enabled=True):
    """--metrics-listen, the container port, probes on /healthz and /readyz, and the
    prometheus.io scrape annotations agree on one port."""
    ds = next(d for d in docs if d and d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]
    container = pod["spec"]["containers"][0]
    listen = [a for a in container.get("args", []) if a.startswith("--metrics-listen=")]
    if not enabled:
        if listen or container.get("livenessProbe") or container.get("readinessProbe"):
            sys.exit(f"{name}: metrics disabled but the endpoint is still configured")
        return
    if len(listen) != 1:
        sys.exit(f"{name}: expected one --metrics-listen, got {listen}")
    port = int(listen[0].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports.get("metrics") != port:
        sys.exit(f"{name}: container port 'metrics' is {ports.get('metrics')}, listen {port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("metrics", port):
            sys.exit(f"{name}: {probe} is {get}, expected GET {path} on the metrics port")
    notes = pod["metadata"].get("annotations", {})
    want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"}
    if any(notes.get(k) != v for k, v in want.items()):
        sys.exit(f"{name}: scrape annotations {notes}, expected {want}")


def check_service_monitor(name, docs):
    """The ServiceMonitor selects the metrics Service, which selects the DaemonSet's pods and
    names the metrics port."""
    ds = next(d for d in docs if d and d["kind"] == "DaemonSet")
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    monitors = [d for d in docs if d and d["kind"] == "ServiceMonitor"]
    if len(monitors) != 1:
        sys.exit(f"{name}: expected one ServiceMonitor, got {len(monitors)}")
    monitor = monitors[0]
    if monitor["apiVersion"] != "monitoring.coreos.com/v1":
        sys.exit(f"{name}: ServiceMonitor apiVersion {monitor['apiVersion']}")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [d for d in docs if d and d["kind"] == "Service"
                and selector.items() <= d["metadata"]["labels"].items()]
    if len(services) != 1:
        sys.exit(f"{name}: the ServiceMonitor selects {len(services)} Services")
    service = services[0]
    if not service["spec"]["selector"].items() <= pod_labels.items():
        sys.exit(f"{name}: the metrics Service does not select the llmtap pods")
    endpoint = monitor["spec"]["endpoints"][0]
    if endpoint["port"] not in {p["name"] for p in service["spec"]["ports"]}:
        sys.exit(f"{name}: ServiceMonitor port {endpoint['port']} not on the Service")
    if endpoint.get("path") != "/metrics":
        sys.exit(f"{name}: ServiceMonitor path {endpoint.get('path')}")


def check_shipped_files(name, docs, values):
    """The PrometheusRule carries deploy/prometheus/llmtap-rules.yaml's groups and the
    dashboard ConfigMap deploy/grafana/llmtap-dashboard.json, when enabled (else neither)."""
    import json

    rules_on = values.get("metrics", {}).get("prometheusRule", {}).get("enabled", False)
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if rules_on:
        with open(os.path.join(DEPLOY, "prometheus", "llmtap-rules.yaml")) as f:
            want = yaml.safe_load(f)
        if len(rules) != 1 or rules[0]["spec"] != want:
            sys.exit(f"{name}: the PrometheusRule does not carry deploy/prometheus/llmtap-rules.yaml")
    elif rules:
        sys.exit(f"{name}: a PrometheusRule although it is off")
    dashboard_on = values.get("grafanaDashboard", {}).get("enabled", False)
    maps = [d for d in docs if d["kind"] == "ConfigMap" and "llmtap-dashboard.json" in d.get("data", {})]
    if dashboard_on:
        with open(os.path.join(DEPLOY, "grafana", "llmtap-dashboard.json")) as f:
            want = json.load(f)
        if len(maps) != 1 or json.loads(maps[0]["data"]["llmtap-dashboard.json"]) != want:
            sys.exit(f"{name}: the dashboard ConfigMap does not carry deploy/grafana/llmtap-dashboard.json")
        if maps[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
            sys.exit(f"{name}: the dashboard ConfigMap lacks the sidecar label")
    elif maps:
        sys.exit(f"{name}: a dashboard ConfigMap although it is off")


def count_documents(path):
    with open(path) as f:
        return sum(1 for d in yaml.safe_load_all(f) if d)


def check_kustomization(tmp):
    base = os.path.join(DEPLOY, "kubernetes")
    with open(os.path.join(base, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    files = [os.path.join(base, r) for r in kustomization["resources"]]
    validate(files)
    kinds = set()
    for path in files:
        with open(path) as f:
            kinds |= {d["kind"] for d in yaml.safe_load_all(f) if d}
    need = {"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap"}
    if not need <= kinds:
        sys.exit(f"kustomization lacks {need - kinds}")
    with open(os.path.join(base, "daemonset.yaml")) as f:
        check_metrics_endpoint("kustomization", list(yaml.safe_load_all(f)))
    print("kustomization: metrics endpoint, probes and scrape annotations agree")
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = os.path.join(tmp, "kustomized.yaml")
        with open(out, "w") as f:
            subprocess.run([kubectl, "kustomize", base], stdout=f, check=True)
        validate([out])
        with open(out) as f:
            check_metrics_endpoint("kustomize build", list(yaml.safe_load_all(f)))
        print(f"kustomize build: {count_documents(out)} documents valid")
    else:
        print("kubectl not on PATH: the kustomize build itself was not rendered")


VARIANTS = {
    "defaults": {},
    "servicemonitor": {
        "metrics": {
            "port": 9500,
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
        },
        "grafanaDashboard": {"enabled": True},
    },
    "no-metrics": {"metrics": {"enabled": False}},
    "privileged": {"privileged": True},
    "grpc-debugfs": {
        "otlp": {
            "endpoint": "https://tempo:4317",
            "protocol": "grpc",
            "headers": "x-tenant=a",
            "compression": "gzip",
        },
        "serviceName": "llmtap-eu",
        "resourceAttributes": "deployment.environment.name=prod,k8s.cluster.name=eu-1",
        "tracefsPath": "/sys/kernel/debug/tracing",
        "extraArgs": ["--comm", "python3"],
        "extraEnv": [
            {"name": "OTEL_EXPORTER_OTLP_CERTIFICATE", "value": "/etc/llmtap/otlp/ca.crt"},
            {"name": "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "value": "/etc/llmtap/otlp/tls.crt"},
            {"name": "OTEL_EXPORTER_OTLP_CLIENT_KEY", "value": "/etc/llmtap/otlp/tls.key"},
        ],
        "extraVolumes": [{"name": "otlp-tls", "secret": {"secretName": "llmtap-otlp-tls"}}],
        "extraVolumeMounts": [{"name": "otlp-tls", "mountPath": "/etc/llmtap/otlp", "readOnly": True}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "serviceAccount": {"create": False, "name": "existing"},
        "rbac": {"create": False},
        "imagePullSecrets": [{"name": "regcred"}],
    },
}


def check_chart(tmp):
    import helm_python as helm

    chart_dir = os.path.join(DEPLOY, "helm", "llmtap")
    lint = helm.lint(chart_dir)
    if lint.get("errors"):
        sys.exit(f"helm lint: {lint['errors']}")
    for name, values in VARIANTS.items():
        with helm.Chart.load(chart_dir) as chart:
            rendered = chart.render(values, name="llmtap", namespace="llmtap")
        out = os.path.join(tmp, f"chart-{name}.yaml")
        docs = []
        with open(out, "w") as f:
            for template, text in sorted(rendered.items()):
                if not (template.endswith(".yaml") and text.strip()):
                    continue
                for doc in yaml.safe_load_all(text):
                    if not doc:
                        continue
                    docs.append(doc)
                    if not doc["apiVersion"].startswith(CUSTOM_API_GROUPS):
                        f.write(f"---\n# {template}\n{yaml.safe_dump(doc)}\n")
        validate([out])
        ds = next(d for d in docs if d and d["kind"] == "DaemonSet")
        sc = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        if bool(values.get("privileged")) != bool(sc.get("privileged")):
            sys.exit(f"chart variant {name}: privileged is {sc.get('privileged')}")
        metrics = values.get("metrics", {})
        check_metrics_endpoint(f"chart variant {name}", docs, metrics.get("enabled", True))
        check_shipped_files(f"chart variant {name}", docs, values)
        monitor = metrics.get("serviceMonitor", {}).get("enabled", False)
        if monitor:
            check_service_monitor(f"chart variant {name}", docs)
        elif any(d["kind"] == "ServiceMonitor" for d in docs):
            sys.exit(f"chart variant {name}: a ServiceMonitor although it is off")
        print(f"helm chart ({name}): {count_documents(out)} documents valid")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        check_kustomization(tmp)
        check_chart(tmp)
    print("deploy manifests: all valid")


if __name__ == "__main__":
    main()
