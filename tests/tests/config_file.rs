//! `llmtap run --config FILE` as a user runs it: the real binary, a TOML file, flags and
//! environment variables. Precedence flag > environment > file > default is observed through
//! which startup step fails: the file asks for `--kubernetes on` (which fails outside a
//! cluster, before anything is loaded) and names a price file that does not exist (which
//! fails right after). No eBPF is needed: llmtap stops before capture starts.

use std::process::Command;

use llmtap_tests::{TempDir, llmtap_bin};

const KUBERNETES_FAILED: &str = "starting the Kubernetes pod watch";
const PRICE_FILE_FAILED: &str = "cannot read price file";

/// Runs `llmtap run --config FILE ARGS` with `env`; returns stderr (it must fail).
fn run(config: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = TempDir::new("config-file").expect("temp dir");
    let path = dir.path().join("llmtap.toml");
    std::fs::write(&path, config).expect("write config");
    let output = Command::new(llmtap_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("LLMTAP_KUBERNETES")
        .env_remove("KUBERNETES_SERVICE_HOST")
        // No kubeconfig: `--kubernetes on` cannot find a cluster.
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .expect("run llmtap");
    assert!(!output.status.success(), "llmtap was expected to stop");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const FILE: &str = r#"
# llmtap run settings
kubernetes = "on"
price-file = "/nonexistent/prices.toml"
output = ["console"]
"#;

#[test]
fn the_file_is_read_and_flags_and_environment_win_over_it() {
    // File over default (`auto`, which would not fail outside a cluster).
    let log = run(FILE, &[], &[]);
    assert!(log.contains(KUBERNETES_FAILED), "{log}");
    // Flag over file.
    let log = run(FILE, &["--kubernetes", "off"], &[]);
    assert!(log.contains(PRICE_FILE_FAILED), "{log}");
    assert!(!log.contains(KUBERNETES_FAILED), "{log}");
    // Environment over file.
    let log = run(FILE, &[], &[("LLMTAP_KUBERNETES", "off")]);
    assert!(log.contains(PRICE_FILE_FAILED), "{log}");
    assert!(
        log.contains("kubernetes left out: set by Environment(\"LLMTAP_KUBERNETES\")"),
        "{log}"
    );
    // Flag over environment, as before.
    let log = run(
        FILE,
        &["--kubernetes", "on"],
        &[("LLMTAP_KUBERNETES", "off")],
    );
    assert!(log.contains(KUBERNETES_FAILED), "{log}");
}

#[test]
fn a_bad_file_is_a_clear_error() {
    let log = run("ring-bufer-size = \"1M\"\n", &[], &[]);
    assert!(log.contains("unknown setting \"ring-bufer-size\""), "{log}");
    let log = run("ring-buffer-size = \"lots\"\n", &[], &[]);
    assert!(log.contains("lots"), "{log}");
    assert!(log.contains("llmtap.toml"), "names the file: {log}");
    let log = run("output = [\n", &[], &[]);
    assert!(log.contains("not valid TOML"), "{log}");
}
