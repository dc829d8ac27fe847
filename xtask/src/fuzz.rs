//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` (nightly, AddressSanitizer),
//! seeds their corpora from the recorded exchanges, runs each for a bounded time one after
//! the other, and writes `target/bench/fuzz.md` (target, seconds, executions, result).
//! cargo-fuzz is installed here, on first use, not by `setup` (CI does not fuzz).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

/// The targets, in the order they run (`fuzz/Cargo.toml` has one `[[bin]]` each).
pub const TARGETS: &[&str] = &[
    "http1_pipeline",
    "h2_pipeline",
    "provider_parsers",
    "stream_framing",
    "decompress",
    "eventstream",
];

const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

struct Outcome {
    target: String,
    seconds: u64,
    execs: Option<u64>,
    corpus: usize,
    result: String,
}

fn cargo_fuzz_installed() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if cargo_fuzz_installed() {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz from crates.io (a few minutes, once)");
    super::run(Command::new("cargo").args(["+stable", "install", "--locked", "cargo-fuzz"]))
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The `stat::number_of_executed_units` libFuzzer prints with `-print_final_stats=1`.
fn executed_units(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn run(root: &Path, seconds: u64, only: &[String], report_path: &Path) -> anyhow::Result<()> {
    for t in only {
        if !TARGETS.contains(&t.as_str()) {
            bail!("unknown fuzz target {t:?}; targets: {}", TARGETS.join(", "));
        }
    }
    ensure_cargo_fuzz()?;
    let fuzz_dir = root.join("fuzz");
    super::run(
        Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "build"]),
    )
    .context("building the fuzz targets")?;
    let bin_dir = fuzz_dir.join("target").join(HOST_TRIPLE).join("release");
    let corpus_root = fuzz_dir.join("corpus");
    super::run(
        Command::new(bin_dir.join("fuzz-seeds"))
            .arg(root.join("tests/data/cassettes"))
            .arg(&corpus_root),
    )
    .context("writing the seed corpora")?;
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = corpus_root.join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        eprintln!("xtask fuzz: {target} for {seconds} s");
        let started = Instant::now();
        let out = Command::new(bin_dir.join(target))
            .arg(&corpus)
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(format!("-max_total_time={seconds}"))
            // Bounded memory is part of what is checked: one allocation over 512 MB, or the
            // process over 1 GB, is a failure.
            .args(["-rss_limit_mb=1024", "-malloc_limit_mb=512"])
            .args(["-print_final_stats=1", "-timeout=30"])
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let result = if out.status.success() {
            "no crash".to_string()
        } else {
            let artifact = stderr
                .lines()
                .find_map(|l| l.split("Test unit written to ").nth(1))
                .unwrap_or("(no artifact)")
                .trim()
                .to_string();
            eprintln!(
                "{}",
                stderr
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            format!("FAILED ({}): {artifact}", out.status)
        };
        outcomes.push(Outcome {
            target: target.to_string(),
            seconds: started.elapsed().as_secs(),
            execs: executed_units(&stderr),
            corpus: count_files(&corpus),
            result,
        });
    }
    let report = render(&outcomes);
    if let Some(dir) = report_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(report_path, &report)
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprint!("{report}");
    eprintln!("xtask fuzz: report written to {}", report_path.display());
    if outcomes.iter().any(|o| o.result != "no crash") {
        bail!(
            "a fuzz target failed; reproduce with fuzz/target/{HOST_TRIPLE}/release/<target> <artifact>"
        );
    }
    Ok(())
}

fn render(outcomes: &[Outcome]) -> String {
    let mut md = String::from(
        "# Fuzzing run\n\n| target | seconds | executions | corpus files | result |\n|---|---:|---:|---:|---|\n",
    );
    for o in outcomes {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            o.target,
            o.seconds,
            o.execs.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
            o.corpus,
            o.result
        ));
    }
    md
}
