//! deploy/ (kustomization and Helm chart) validated offline against the Kubernetes schemas by
//! deploy/validate.py, with the tools `cargo xtask setup` installs; it also checks that the
//! metrics endpoint, probes, scrape annotations and the optional ServiceMonitor agree.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tools_python() -> PathBuf {
    let dir = std::env::var_os("LLMTAP_K8S_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
                .map(|c| c.join("llmtap-k8s-tools"))
        })
        .unwrap_or_else(|| PathBuf::from("/root/.cargo/llmtap-k8s-tools"));
    dir.join("bin/python3")
}

#[test]
fn deploy_manifests_and_chart_validate_against_the_kubernetes_schemas() {
    let python = tools_python();
    if !python.is_file() {
        let required = llmtap_tests::ebpf_required() || std::env::var_os("CI").is_some();
        let message = format!(
            "validation tools missing ({}): run `cargo xtask setup`",
            python.display()
        );
        assert!(!required, "{message}");
        eprintln!("SKIPPED deploy manifest validation: {message}");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/validate.py");
    let output = Command::new(&python)
        .arg(&script)
        .output()
        .expect("running deploy/validate.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deploy/validate.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("deploy manifests: all valid"), "{stdout}");
    assert!(stdout.contains("helm chart (defaults)"), "{stdout}");
    // --metrics-listen, its container port, the /healthz and /readyz probes and the
    // prometheus.io annotations agree; the optional ServiceMonitor selects the pods' port.
    assert!(
        stdout.contains("kustomization: metrics endpoint, probes and scrape annotations agree"),
        "{stdout}"
    );
    assert!(stdout.contains("helm chart (servicemonitor)"), "{stdout}");
    assert!(stdout.contains("helm chart (no-metrics)"), "{stdout}");
}
