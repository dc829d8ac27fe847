//! `cargo xtask`: the one place for build orchestration.
//!
//! - `setup`: installs what a fresh machine lacks (nightly rust-src, bpf-linker built against
//!   the nightly toolchain's own libLLVM, the Debian packages the tests use). Idempotent.
//! - `build`: release build of `llmtap` (the eBPF object is built by tracer-user's build.rs).
//! - `run`: setup if needed, build, run `llmtap` with the given arguments.
//! - `test`: setup if needed, then unit, integration and end-to-end (eBPF) tests.
//! - `lint`: rustfmt and clippy with warnings denied.
//! - `demo`: the live console view while real SDK clients call a local replay server.
//! - `fuzz`: cargo-fuzz targets (`fuzz/`), each for a bounded time; report in target/bench.
//! - `package`: a Debian package (binary, systemd unit, configuration) built with dpkg-deb.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bench_host;
mod bench_load;
mod fuzz;
mod package;

#[derive(Parser)]
#[command(name = "xtask", about = "llmtap build orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces and packages a fresh machine lacks (idempotent).
    Setup,
    /// Build the release binary target/release/llmtap.
    Build,
    /// Build and run llmtap (as root); arguments after `--` go to llmtap (default: `run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run every test: unit, pipeline, and end-to-end with real eBPF.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Check formatting and clippy (warnings are errors).
    Lint,
    /// Overhead benchmarks; writes target/bench/report.{md,json} (with `--section`, only that
    /// section, to target/bench/section.{md,json}).
    Bench {
        /// Run only this section (traced_overhead, per_hook_cost, filtered_traffic,
        /// discovery, plain_http_cost, mcp_stdio_cost, pipeline_throughput, load,
        /// binary_analysis).
        #[arg(long)]
        section: Option<String>,
    },
    /// Live demo (as root): llmtap's console view while real SDK clients call a local replay
    /// of recorded OpenAI, Anthropic, Gemini and Groq responses; exits when done.
    Demo {
        /// Also export to this backend, started on 127.0.0.1 from its virtualenv (`phoenix`:
        /// Arize Phoenix on port 6006; `mlflow`: MLflow on port 5000), which keeps running
        /// with the demo's calls until Ctrl-C.
        #[arg(long, value_name = "phoenix|mlflow")]
        backend: Option<String>,
    },
    /// Run the cargo-fuzz targets (fuzz/) one after the other, each for a bounded time;
    /// writes target/bench/fuzz.md. Installs cargo-fuzz on first use.
    /// Build a Debian package of llmtap (binary, systemd unit, /etc/llmtap/llmtap.toml) with
    /// dpkg-deb: target/debian/llmtap_VERSION_ARCH.deb.
    Package {
        /// Package this binary instead of building target/release/llmtap.
        #[arg(long, value_name = "PATH")]
        llmtap_bin: Option<PathBuf>,
        /// Where the .deb goes.
        #[arg(long, value_name = "DIR", default_value = "target/debian")]
        out_dir: PathBuf,
    },
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only this target (repeatable; default: all).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Where the Markdown report goes.
        #[arg(long, default_value = "target/bench/fuzz.md")]
        report: PathBuf,
    },
}

/// bpf-linker release the eBPF build is known to work with.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What the tests and benchmarks run (a command on PATH, or an absolute file), and the
/// Debian package providing each.
const DEBIAN_TOOLS: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("python3", "python3"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("gcc", "gcc"),
    // The stripped-rustls-binary test.
    ("strip", "binutils"),
    ("bpftrace", "bpftrace"),
    // The Go crypto/tls tests build their client (tests/clients/go-client).
    ("go", "golang-go"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
    // The Prometheus scrape test (tests/tests/prometheus.rs), `promtool check metrics` on the
    // exposition and `promtool check/test rules` on deploy/prometheus.
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    // `cargo xtask package` and its test (tests/tests/systemd_unit.rs): the .deb is built by
    // dpkg-deb with dpkg-shlibdeps' dependencies; its unit is checked by systemd-analyze.
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("systemd-analyze", "systemd"),
    // The Phoenix test's look at its trace page (headless, `--dump-dom` and `--screenshot`).
    ("chromium", "chromium"),
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    prepend_cargo_bin_to_path();
    match cli.command {
        Task::Setup => setup(),
        Task::Build => {
            ensure_setup()?;
            cargo(&root, &["build", "--release", "-p", "tracer-user"])
        }
        Task::Run { args } => {
            ensure_setup()?;
            cargo(&root, &["build", "--release", "-p", "tracer-user"])?;
            let mut cmd = Command::new(root.join("target/release/llmtap"));
            if args.is_empty() {
                cmd.arg("run");
            } else {
                cmd.args(&args);
            }
            run(&mut cmd)
        }
        Task::Test { args } => {
            ensure_setup()?;
            test(&root, &args)
        }
        Task::Bench { section } => {
            ensure_setup()?;
            cargo(&root, &["build", "--release", "-p", "tracer-user"])?;
            bench::run(&root, section.as_deref())
        }
        Task::Demo { backend } => {
            ensure_setup()?;
            match backend.as_deref() {
                None => demo(&root, &[]),
                Some(name) => demo_with_backend(&root, name),
            }
        }
        Task::Package {
            llmtap_bin,
            out_dir,
        } => {
            let binary = match llmtap_bin {
                Some(binary) => binary,
                None => {
                    ensure_setup()?;
                    cargo(
                        &root,
                        &["build", "--release", "-p", "tracer-user", "--bin", "llmtap"],
                    )?;
                    root.join("target/release/llmtap")
                }
            };
            let out_dir = if out_dir.is_absolute() {
                out_dir
            } else {
                root.join(out_dir)
            };
            std::fs::create_dir_all(&out_dir)?;
            let deb = package::package(&root, &binary, &out_dir)?;
            eprintln!("xtask package: {}", deb.display());
            Ok(())
        }
        Task::Fuzz {
            time,
            targets,
            report,
        } => {
            // The eBPF object is built into tracer-user: same prerequisites as a build.
            ensure_setup()?;
            fuzz::run(&root, time, &targets, &root.join(report))
        }
        Task::Lint => {
            ensure_setup()?;
            cargo(&root, &["fmt", "--all", "--check"])?;
            cargo(
                &root,
                &[
                    "clippy",
                    "--workspace",
                    "--exclude",
                    "tracer-ebpf",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
        }
    }
}

fn test(root: &Path, extra: &[OsString]) -> anyhow::Result<()> {
    // The end-to-end tests run the real binary, optimized as users run it: discovery must
    // inspect and hook a new process within its first milliseconds.
    cargo(
        root,
        &["build", "--release", "-p", "tracer-user", "--bin", "llmtap"],
    )?;
    let mut cmd = Command::new(cargo_path());
    cmd.current_dir(root)
        .args(["test", "--workspace", "--exclude", "tracer-ebpf"])
        .args(extra)
        .env("LLMTAP_BIN", root.join("target/release/llmtap"))
        .env("LLMTAP_K8S_TOOLS", k8s_tools_dir());
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        cmd.env("RUST_BACKTRACE", "1");
    }
    run(&mut cmd)
}

/// `cargo xtask demo --backend NAME`: the backend on loopback (its data in target/demo-NAME),
/// the demo exporting to it, then the URL to open; the backend runs until Ctrl-C.
fn demo_with_backend(root: &Path, name: &str) -> anyhow::Result<()> {
    let backend = BACKENDS
        .iter()
        .find(|b| b.name == name)
        .with_context(|| format!("unknown backend {name:?}: phoenix or mlflow"))?;
    let data = root.join(format!("target/demo-{name}"));
    std::fs::create_dir_all(&data)?;
    let bin = backend.venv_dir().join("bin");
    let (mut server, health, export, open) = match name {
        "phoenix" => {
            let mut cmd = Command::new(bin.join("phoenix"));
            cmd.arg("serve")
                .env("PHOENIX_HOST", "127.0.0.1")
                .env("PHOENIX_PORT", "6006")
                .env("PHOENIX_WORKING_DIR", &data)
                .env("PHOENIX_TELEMETRY_ENABLED", "false");
            let export = vec![
                "--otlp-endpoint",
                "http://127.0.0.1:6006",
                "--compat",
                "openinference",
                "--openinference-project",
                "llmtap-demo",
                "--capture-content",
            ];
            (
                cmd,
                "http://127.0.0.1:6006/healthz",
                export,
                "http://127.0.0.1:6006 (project llmtap-demo)",
            )
        }
        _ => {
            let mut cmd = Command::new(bin.join("mlflow"));
            cmd.args(["server", "--host", "127.0.0.1", "--port", "5000"])
                .arg("--backend-store-uri")
                .arg(format!("sqlite:///{}/mlflow.db", data.display()))
                .arg("--default-artifact-root")
                .arg(data.join("artifacts"))
                .env("MLFLOW_ENABLE_TELEMETRY", "false");
            let export = vec![
                "--otlp-endpoint",
                "http://127.0.0.1:5000",
                "--otlp-header",
                "x-mlflow-experiment-id=0",
                "--capture-content",
            ];
            (
                cmd,
                "http://127.0.0.1:5000/health",
                export,
                "http://127.0.0.1:5000/#/experiments/0 (Traces tab)",
            )
        }
    };
    let log = std::fs::File::create(data.join("server.log"))?;
    let mut child = server
        .current_dir(&data)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the {name} server"))?;
    eprintln!(
        "xtask demo: starting {name} (log: {})",
        data.join("server.log").display()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let up = Command::new("curl")
            .args(["-sf", "--max-time", "5", "-o", "/dev/null", health])
            .status()
            .is_ok_and(|s| s.success());
        if up {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the {name} server exited ({status}); see {}",
                data.join("server.log").display()
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("the {name} server did not answer {health} within 3 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Neither backend takes OTLP metrics.
    // SAFETY: single-threaded here; no other thread reads the environment.
    unsafe { std::env::set_var("OTEL_METRICS_EXPORTER", "none") };
    let outcome = demo(root, &export);
    if let Err(e) = outcome {
        let _ = child.kill();
        return Err(e);
    }
    println!("\nopen {open} to see the calls; {name} runs until Ctrl-C");
    child.wait()?;
    Ok(())
}

fn demo(root: &Path, llmtap_args: &[&str]) -> anyhow::Result<()> {
    cargo(
        root,
        &["build", "--release", "-p", "tracer-user", "--bin", "llmtap"],
    )?;
    cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "llmtap-tests",
            "--bin",
            "llmtap-replay",
            "--bin",
            "llmtap-demo",
        ],
    )?;
    run(Command::new(root.join("target/release/llmtap-demo"))
        .args(llmtap_args)
        .env("LLMTAP_BIN", root.join("target/release/llmtap"))
        .env(
            "LLMTAP_REPLAY_BIN",
            root.join("target/release/llmtap-replay"),
        ))
}

fn setup() -> anyhow::Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_debian_tools()?;
    ensure_k8s_tools()?;
    ensure_sdk_clients()?;
    ensure_backends()?;
    eprintln!("xtask setup: everything is in place");
    Ok(())
}

/// Runs setup only when something is missing, so `run`/`test` work on a fresh machine.
fn ensure_setup() -> anyhow::Result<()> {
    if rust_src_present()
        && bpf_linker_ok()
        && missing_debian_packages().is_empty()
        && k8s_tools_ok()
        && python_sdks_ok()
        && node_sdk_ok()
        && backends_ok()
    {
        return Ok(());
    }
    eprintln!("xtask: toolchain or packages missing, running setup first");
    setup()
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running `rustc +nightly` (is rustup installed?)")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn rust_src_present() -> bool {
    nightly_sysroot().is_ok_and(|s| s.join("lib/rustlib/src/rust/library/core").is_dir())
}

/// The eBPF crate is built with `-Z build-std=core`, which needs nightly's rust-src.
fn ensure_rust_src() -> anyhow::Result<()> {
    if rust_src_present() {
        return Ok(());
    }
    if nightly_sysroot().is_err() {
        eprintln!("xtask setup: installing a nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    eprintln!("xtask setup: adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
}

/// Builds bpf-linker against the nightly toolchain's own libLLVM: no system LLVM is new enough
/// here, and using the very LLVM that compiles the eBPF crate rules out version skew.
fn ensure_bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let lib_dir = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib_dir.display()))?;
    let version = Command::new("rustc").args(["+nightly", "-vV"]).output()?;
    let version = String::from_utf8_lossy(&version.stdout);
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly rustc does not report its LLVM version")?
        .to_string();

    // `-lLLVM` needs libLLVM.so at link time; the binary's RUNPATH needs the SONAME at run time.
    let prefix = cargo_home().join("llmtap-llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let soname = libllvm.file_name().context("libLLVM file name")?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(soname)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major}, about a minute)",
        libllvm.display()
    );
    // Through the rustup proxy so `+stable` selects the toolchain.
    run(Command::new("cargo")
        .args([
            "+stable",
            "install",
            "--force",
            "--locked",
            "--no-default-features",
        ])
        .arg("--features")
        .arg(format!("llvm-{major}"))
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but `bpf-linker --version` does not work");
    }
    Ok(())
}

fn missing_debian_packages() -> Vec<&'static str> {
    DEBIAN_TOOLS
        .iter()
        .filter(|(tool, _)| {
            if tool.starts_with('/') {
                !Path::new(tool).exists()
            } else {
                !on_path(tool)
            }
        })
        .map(|(_, package)| *package)
        .collect()
}

fn ensure_debian_tools() -> anyhow::Result<()> {
    let missing = missing_debian_packages();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing Debian packages {missing:?}");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// PyPI packages of the offline manifest validation (deploy/validate.py): the Kubernetes
/// JSON schemas with a validator, and Helm's own engine (its Go SDK, in a wheel).
const K8S_TOOLS: &[&str] = &["kubernetes-validate==1.37.0", "helm-python-sdk==0.2.2"];

/// Where the validation tools live: a virtualenv (`LLMTAP_K8S_TOOLS` overrides; the test
/// reads the same variable).
fn k8s_tools_dir() -> PathBuf {
    std::env::var_os("LLMTAP_K8S_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_home().join("llmtap-k8s-tools"))
}

fn k8s_tools_ok() -> bool {
    let python = k8s_tools_dir().join("bin/python3");
    python.is_file()
        && Command::new(&python)
            .args(["-c", "import kubernetes_validate, helm_python, yaml"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn ensure_k8s_tools() -> anyhow::Result<()> {
    if k8s_tools_ok() {
        return Ok(());
    }
    install_venv(&k8s_tools_dir(), K8S_TOOLS)?;
    if !k8s_tools_ok() {
        bail!("the Kubernetes validation tools were installed but do not import");
    }
    Ok(())
}

/// A fresh virtualenv in `dir` with `packages` installed by pip.
fn install_venv(dir: &Path, packages: &[&str]) -> anyhow::Result<()> {
    eprintln!(
        "xtask setup: installing {packages:?} into {}",
        dir.display()
    );
    let venv = || {
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(dir)
            .status()
    };
    if !venv().is_ok_and(|s| s.success()) {
        // Debian's python3 needs its venv module installed separately.
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "python3-venv"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(dir))?;
    }
    // No wheel cache: the backends alone are 1.7 GB installed; a cached copy would double it.
    run(Command::new(dir.join("bin/python3"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-cache-dir",
        ])
        .args(packages))
}

/// An LLM observability backend the end-to-end tests and `cargo xtask demo --backend` run,
/// installed from PyPI into its own virtualenv (their dependencies conflict with the SDKs').
pub(crate) struct Backend {
    pub name: &'static str,
    /// Virtualenv under the workspace.
    pub venv: &'static str,
    /// The PyPI distribution, pinned.
    pub distribution: &'static str,
    pub version: &'static str,
    /// Its module (checked to be importable without importing it: Phoenix takes 15 s).
    pub module: &'static str,
}

/// Arize Phoenix and MLflow (`tests/tests/phoenix.rs`, `tests/tests/mlflow.rs`). MLflow is
/// pinned to 3.17.2: 3.18.0 needs an `mlflow-tracing` release PyPI does not have.
pub(crate) const BACKENDS: &[Backend] = &[
    Backend {
        name: "phoenix",
        venv: "tests/.venv-phoenix",
        distribution: "arize-phoenix",
        version: "20.26.1",
        module: "phoenix",
    },
    Backend {
        name: "mlflow",
        venv: "tests/.venv-mlflow",
        distribution: "mlflow",
        version: "3.17.2",
        module: "mlflow",
    },
];

impl Backend {
    pub fn venv_dir(&self) -> PathBuf {
        workspace_root().join(self.venv)
    }

    fn installed(&self) -> bool {
        let python = self.venv_dir().join("bin/python3");
        let check = format!(
            "import importlib.metadata as m, importlib.util as u; \
             assert m.version('{}') == '{}'; assert u.find_spec('{}')",
            self.distribution, self.version, self.module
        );
        python.is_file()
            && Command::new(&python)
                .args(["-c", &check])
                .output()
                .is_ok_and(|o| o.status.success())
    }
}

fn backends_ok() -> bool {
    BACKENDS.iter().all(Backend::installed)
}

fn ensure_backends() -> anyhow::Result<()> {
    for backend in BACKENDS {
        if backend.installed() {
            continue;
        }
        let package = format!("{}=={}", backend.distribution, backend.version);
        eprintln!(
            "xtask setup: installing the {} backend (about a minute, 850 MB)",
            backend.name
        );
        install_venv(&backend.venv_dir(), &[&package])?;
        if !backend.installed() {
            bail!("{package} was installed but does not import");
        }
    }
    Ok(())
}

/// The real SDK clients of the end-to-end tests (tests/clients/sdk_client.py), pinned.
const PYTHON_SDKS: &[&str] = &[
    "openai==3.57.0",
    "anthropic==2.16.0",
    "httpx[http2]==0.29.0",
    "ollama==0.6.3",
    // The WebSocket client of the Responses-over-WebSocket tests (tests/clients/ws_client.py).
    "websockets==17.4",
    // MCP client and server of the MCP tests, over HTTP and stdio (tests/clients/mcp_*.py).
    "mcp==2.3.0",
    // The attribute names `--compat openinference` is checked against (tests/tests/openinference.rs).
    "openinference-semantic-conventions==0.1.42",
];

fn python_sdks_dir() -> PathBuf {
    workspace_root().join("tests/.venv")
}

fn python_sdks_ok() -> bool {
    let python = python_sdks_dir().join("bin/python3");
    python.is_file()
        && Command::new(&python)
            .args([
                "-c",
                "import openai, anthropic, h2, ollama, websockets, mcp, openinference.semconv; \
                 import importlib.metadata as m; \
                 assert openai.__version__ == '3.57.0'; assert websockets.__version__ == '17.4'; \
                 assert m.version('openinference-semantic-conventions') == '0.1.42'",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// What tests/package-lock.json installs: the npm `openai` SDK, Bun, and the agent CLIs
/// with their native linux-x64 executables (optional dependencies npm picks per platform).
const NODE_PACKAGE_FILES: &[&str] = &[
    "openai/package.json",
    "@oven/bun-linux-x64/bin/bun",
    "@anthropic-ai/claude-code-linux-x64/claude",
    "@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
    "@deno/linux-x64-glibc/deno",
];

fn node_sdk_ok() -> bool {
    let modules = workspace_root().join("tests/node_modules");
    NODE_PACKAGE_FILES.iter().all(|f| modules.join(f).is_file())
}

fn ensure_sdk_clients() -> anyhow::Result<()> {
    if !python_sdks_ok() {
        install_venv(&python_sdks_dir(), PYTHON_SDKS)?;
        if !python_sdks_ok() {
            bail!("the Python SDKs were installed but do not import");
        }
    }
    if !node_sdk_ok() {
        eprintln!(
            "xtask setup: installing the npm openai SDK, Bun, Claude Code, Codex and Deno into tests/node_modules"
        );
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(workspace_root().join("tests")))?;
        if !node_sdk_ok() {
            bail!(
                "npm ci in tests/ did not install every package the tests run: {NODE_PACKAGE_FILES:?}"
            );
        }
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Cargo installs bpf-linker into `$CARGO_HOME/bin`: make sure children find it.
fn prepend_cargo_bin_to_path() {
    let bin = cargo_home().join("bin");
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = std::env::split_paths(&current).collect();
    if !paths.contains(&bin) {
        paths.insert(0, bin);
        if let Ok(joined) = std::env::join_paths(paths) {
            // SAFETY: single-threaded at this point; no other thread reads the environment.
            unsafe { std::env::set_var("PATH", joined) };
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo_path() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

pub(crate) fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(cargo_path()).current_dir(root).args(args))
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
