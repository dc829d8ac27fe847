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
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = os.path.join(tmp, "kustomized.yaml")
        with open(out, "w") as f:
            subprocess.run([kubectl, "kustomize", base], stdout=f, check=True)
        validate([out])
        print(f"kustomize build: {count_documents(out)} documents valid")
    else:
        print("kubectl not on PATH: the kustomize build itself was not rendered")


VARIANTS = {
    "defaults": {},
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
        with open(out, "w") as f:
            for template, text in sorted(rendered.items()):
                if template.endswith(".yaml") and text.strip():
                    f.write(f"---\n# {template}\n{text}\n")
        validate([out])
        docs = list(yaml.safe_load_all(open(out)))
        ds = next(d for d in docs if d and d["kind"] == "DaemonSet")
        sc = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        if bool(values.get("privileged")) != bool(sc.get("privileged")):
            sys.exit(f"chart variant {name}: privileged is {sc.get('privileged')}")
        print(f"helm chart ({name}): {count_documents(out)} documents valid")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        check_kustomization(tmp)
        check_chart(tmp)
    print("deploy manifests: all valid")


if __name__ == "__main__":
    main()
