//! `llmtap run --config FILE`: every `llmtap run` flag from a TOML file.
//!
//! A key is a flag's long name (`ring-buffer-size`, or `ring_buffer_size`); a value is what the
//! flag takes (a string or a number), `true`/`false` for a switch (`capture-content = true`), and
//! an array for a repeatable flag (`pid = [1, 2]`, `output = ["console", "otlp"]`); `true` and
//! `false` also stand for `on` and `off`. Precedence: flag > environment > file > default. A key
//! is left out when its flag is on the command line, or when an environment variable sets it:
//! the flag's own (`LLMTAP_KUBERNETES`, `NODE_NAME`) or the OpenTelemetry variable llmtap reads
//! for the same setting (`OTEL_EXPORTER_OTLP_ENDPOINT` & co.). The file's remaining settings
//! are handed to the same parser as the command line, so they are checked the same way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// OpenTelemetry variables that set a flag's setting too (read by the exporters, not by clap).
pub const ENVIRONMENT_ALTERNATIVES: &[(&str, &[&str])] = &[
    (
        "otlp-endpoint",
        &[
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ],
    ),
    (
        "otlp-protocol",
        &[
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ],
    ),
    (
        "otlp-timeout",
        &[
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        ],
    ),
    (
        "capture-content",
        &["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"],
    ),
];

/// Flags a file cannot set.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

/// Errors reading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: unknown setting {key:?} (settings are `llmtap run` flags: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("{path}: {key}: {reason}")]
    Value {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// Reads and parses the file.
pub fn read(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
}

/// Why a setting of the file is not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overridden {
    CommandLine,
    Environment(String),
}

/// The file's settings as command-line arguments, to be parsed before the real command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileArguments {
    pub args: Vec<OsString>,
    /// Settings left out, and why.
    pub overridden: Vec<(String, Overridden)>,
}

/// The arguments `table` (from `path`) contributes to `command` (the `llmtap run` command),
/// given what the command line set (`matches`, parsed from it) and the environment (`env`).
pub fn file_arguments(
    command: &Command,
    matches: &ArgMatches,
    table: &toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
    path: &Path,
) -> Result<FileArguments, ConfigError> {
    let mut out = FileArguments::default();
    let value_error = |key: &str, reason: String| ConfigError::Value {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .filter(|_| !NOT_IN_FILE.contains(&long.as_str()))
            .ok_or_else(|| ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                known: command
                    .get_arguments()
                    .filter_map(|a| a.get_long())
                    .filter(|l| !NOT_IN_FILE.contains(l))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        match matches.value_source(arg.get_id().as_str()) {
            Some(ValueSource::CommandLine) => {
                out.overridden.push((long, Overridden::CommandLine));
                continue;
            }
            Some(ValueSource::EnvVariable) => {
                let variable = arg
                    .get_env()
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.overridden
                    .push((long, Overridden::Environment(variable)));
                continue;
            }
            _ => {}
        }
        let set_by_env = ENVIRONMENT_ALTERNATIVES
            .iter()
            .find(|(flag, _)| *flag == long)
            .and_then(|(_, variables)| {
                variables
                    .iter()
                    .find(|v| env(v).is_some_and(|value| !value.trim().is_empty()))
            });
        if let Some(variable) = set_by_env {
            out.overridden
                .push((long, Overridden::Environment(variable.to_string())));
            continue;
        }
        let flag = OsString::from(format!("--{long}"));
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => out.args.push(flag),
                toml::Value::Boolean(false) => {}
                other => {
                    return Err(value_error(
                        key,
                        format!("a switch takes true or false, not {other}"),
                    ));
                }
            }
            continue;
        }
        let items: Vec<&toml::Value> = match value {
            toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
                items.iter().collect()
            }
            toml::Value::Array(_) => {
                return Err(value_error(key, "takes one value, not an array".into()));
            }
            single => vec![single],
        };
        for item in items {
            let text = match item {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(true) => "on".to_string(),
                toml::Value::Boolean(false) => "off".to_string(),
                other => {
                    return Err(value_error(
                        key,
                        format!("expected a string, number or boolean, not {other}"),
                    ));
                }
            };
            // `--flag=value` keeps a value starting with `-` a value.
            let mut arg = flag.clone();
            arg.push("=");
            arg.push(text);
            out.args.push(arg);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    #[derive(Parser, Debug, PartialEq)]
    struct Run {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long = "pid")]
        pids: Vec<u32>,
        #[arg(long, default_value = "16M")]
        ring_buffer_size: String,
        #[arg(long)]
        capture_content: bool,
        #[arg(long)]
        otlp_endpoint: Option<String>,
        #[arg(long, default_value = "on")]
        plain_http: String,
        #[arg(long, default_value_t = 300)]
        idle_timeout: u64,
    }

    /// The settings that result from `cli` (after `run`), the file `toml` and `env`.
    fn resolve(cli: &[&str], toml: &str, env: &[(&str, &str)]) -> Result<Run, String> {
        let command = Run::command();
        let argv: Vec<OsString> = std::iter::once("run")
            .chain(cli.iter().copied())
            .map(OsString::from)
            .collect();
        let matches = command
            .clone()
            .try_get_matches_from(&argv)
            .map_err(|e| e.to_string())?;
        let table: toml::Table = toml.parse().map_err(|e| format!("{e}"))?;
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let file = file_arguments(&command, &matches, &table, &lookup, Path::new("t.toml"))
            .map_err(|e| e.to_string())?;
        let mut full: Vec<OsString> = vec!["run".into()];
        full.extend(file.args);
        full.extend(argv.into_iter().skip(1));
        let matches = command
            .try_get_matches_from(full)
            .map_err(|e| e.to_string())?;
        Run::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_without_a_file() {
        let run = resolve(&[], "", &[]).expect("resolves");
        assert_eq!(run.ring_buffer_size, "16M");
        assert_eq!(run.idle_timeout, 300);
        assert!(!run.capture_content);
    }

    #[test]
    fn the_file_beats_the_defaults() {
        let run = resolve(
            &[],
            r#"
            ring-buffer-size = "64M"
            idle_timeout = 30
            capture-content = true
            pid = [10, 20]
            plain-http = false
            otlp-endpoint = "http://collector:4318"
            "#,
            &[],
        )
        .expect("resolves");
        assert_eq!(run.ring_buffer_size, "64M");
        assert_eq!(run.idle_timeout, 30);
        assert!(run.capture_content);
        assert_eq!(run.pids, [10, 20]);
        assert_eq!(run.plain_http, "off");
        assert_eq!(run.otlp_endpoint.as_deref(), Some("http://collector:4318"));
    }

    #[test]
    fn flags_beat_the_file() {
        let file = r#"
            ring-buffer-size = "64M"
            pid = [10, 20]
            capture-content = false
        "#;
        let run = resolve(
            &[
                "--ring-buffer-size",
                "8M",
                "--pid",
                "7",
                "--capture-content",
            ],
            file,
            &[],
        )
        .expect("resolves");
        assert_eq!(run.ring_buffer_size, "8M");
        // A repeatable flag on the command line replaces the file's list.
        assert_eq!(run.pids, [7]);
        assert!(run.capture_content);
    }

    #[test]
    fn environment_beats_the_file() {
        let file = r#"
            otlp-endpoint = "http://from-file:4318"
            capture-content = true
        "#;
        let run = resolve(
            &[],
            file,
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://env:4318/v1/traces",
                ),
                (
                    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
                    "false",
                ),
            ],
        )
        .expect("resolves");
        assert_eq!(run.otlp_endpoint, None, "the variable's endpoint is used");
        assert!(!run.capture_content);
        // An empty variable sets nothing.
        let run = resolve(&[], file, &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).expect("resolves");
        assert_eq!(run.otlp_endpoint.as_deref(), Some("http://from-file:4318"));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let err = resolve(&[], "ring-bufer-size = \"1M\"", &[]).expect_err("typo");
        assert!(err.contains("unknown setting \"ring-bufer-size\""), "{err}");
        assert!(
            err.contains("ring-buffer-size"),
            "lists the settings: {err}"
        );
        let err = resolve(&[], "config = \"other.toml\"", &[]).expect_err("nested");
        assert!(err.contains("unknown setting"), "{err}");
        let err = resolve(&[], "capture-content = \"yes\"", &[]).expect_err("switch");
        assert!(err.contains("true or false"), "{err}");
        let err = resolve(&[], "ring-buffer-size = [\"1M\"]", &[]).expect_err("array");
        assert!(err.contains("one value"), "{err}");
        let err = resolve(&[], "idle-timeout = \"soon\"", &[]).expect_err("value");
        assert!(err.contains("soon"), "{err}");
        let err = resolve(&[], "pid = [{ a = 1 }]", &[]).expect_err("table");
        assert!(err.contains("expected a string"), "{err}");
    }

    #[test]
    fn reading_reports_the_file() {
        let err = read(Path::new("/nonexistent/llmtap.toml")).expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/llmtap.toml"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("llmtap-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "output = [").expect("write");
        let err = read(&path).expect_err("not TOML");
        assert!(err.to_string().contains("not valid TOML"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
