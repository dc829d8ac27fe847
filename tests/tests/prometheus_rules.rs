//! The alerting rules (deploy/prometheus) and the Grafana dashboard (deploy/grafana): the rules
//! pass `promtool check rules` and their unit tests (`promtool test rules`); the dashboard is a
//! Grafana dashboard whose every query, like every rule, names only metrics llmtap exports,
//! read from its own exposition. The Helm chart ships the same files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use llmtap::export::prometheus::PrometheusMetrics;
use llmtap::export::{HealthSnapshot, metrics::SpanLosses};
use llmtap_tests::{ebpf_required, repo_root};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

/// Runs promtool; `None` (test skipped) when it is missing and not required.
fn promtool(args: &[&str], dir: &Path) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(output) => Some(output),
        Err(e) => {
            assert!(
                !ebpf_required() && std::env::var_os("CI").is_none(),
                "promtool is required (`cargo xtask setup` installs Debian's prometheus): {e}"
            );
            eprintln!("SKIPPED: promtool not runnable ({e}); `cargo xtask setup` installs it");
            None
        }
    }
}

fn assert_success(output: &std::process::Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what}:\n{text}");
    text
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let dir = deploy("prometheus");
    let Some(check) = promtool(&["check", "rules", "llmtap-rules.yaml"], &dir) else {
        return;
    };
    let text = assert_success(&check, "promtool check rules");
    assert!(text.contains("SUCCESS"), "{text}");
    let Some(test) = promtool(&["test", "rules", "llmtap-rules.test.yaml"], &dir) else {
        return;
    };
    let text = assert_success(&test, "promtool test rules");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Every sample name llmtap's exposition carries, with every family filled: a streamed call
/// with a finish reason and a cost, a failed one, the health totals and OTLP span losses.
fn exported_sample_names() -> BTreeSet<String> {
    let metrics = PrometheusMetrics::new();
    let path = repo_root().join("tests/data/cassettes/openai__chat_stream_include_usage.json");
    let cassette = llmtap::testing::load_cassette(&path).expect("cassette");
    let stream =
        llmtap::testing::cassette_events(&cassette, &llmtap::testing::ReplayOptions::default());
    let mut records = Vec::new();
    let mut pipeline = llmtap::pipeline::Pipeline::new(Default::default());
    for event in stream {
        pipeline.push(event, &mut records);
    }
    pipeline.finish(&mut records);
    assert_eq!(records.len(), 1, "{records:#?}");
    let mut failed = records[0].clone();
    failed.error = Some(llmtap::genai::CallError {
        error_type: "429".into(),
        http_status: Some(429),
        mid_stream: false,
        message: None,
    });
    metrics.record_call(&records[0], &Vec::new(), Some(0.01));
    metrics.record_call(&failed, &Vec::new(), None);
    metrics.record_health(&HealthSnapshot::default());
    metrics.record_span_losses(&SpanLosses::default());
    let text = metrics.encode();
    let names: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    // The families the rules and dashboard rely on are all there.
    for family in [
        "gen_ai_client_token_usage_sum",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
        "llmtap_call_finish_reasons_total",
        "llmtap_call_cost_usd_total",
        "llmtap_export_dropped_spans_total",
    ] {
        assert!(names.contains(family), "{family} not exported:\n{text}");
    }
    names
}

/// The metric names a PromQL expression refers to: identifiers of llmtap's namespaces
/// (`gen_ai_*`, `llmtap_*`) that are not label names (followed by `=`, `!=`, `=~`, or inside
/// `by (...)`/`on (...)` lists).
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = promql.as_bytes();
    let mut i = 0;
    let mut in_label_list = 0usize;
    let mut in_selector = false;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            // Skip string literals.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &promql[start..i];
            let rest = promql[i..].trim_start();
            if matches!(word, "by" | "without" | "on" | "ignoring" | "group_left")
                && rest.starts_with('(')
            {
                in_label_list += 1;
            } else if in_label_list == 0
                && !in_selector
                && (word.starts_with("gen_ai_") || word.starts_with("llmtap_"))
            {
                names.insert(word.to_string());
            }
            continue;
        }
        match c {
            '{' => in_selector = true,
            '}' => in_selector = false,
            ')' if in_label_list > 0 => in_label_list -= 1,
            _ => {}
        }
        i += 1;
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    assert_eq!(
        metric_names(
            r#"sum by (gen_ai_request_model) (rate(llmtap_calls_total{gen_ai_provider_name="a{b"}[5m])) / on (k8s_namespace_name) gen_ai_client_token_usage_sum"#
        ),
        BTreeSet::from([
            "llmtap_calls_total".to_string(),
            "gen_ai_client_token_usage_sum".to_string()
        ])
    );
}

fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("").to_string();
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {title:?} has no query"
        );
        for target in targets.into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "panel {title:?}: empty expr");
            exprs.push((title.clone(), expr.to_string()));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .unwrap_or("");
            exprs.push((format!("variable {}", variable["name"]), query.to_string()));
        }
    }
    exprs
}

#[test]
fn dashboard_queries_and_rules_name_only_exported_metrics() {
    let exported = exported_sample_names();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/llmtap-dashboard.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        let grid = &panel["gridPos"];
        for key in ["x", "y", "w", "h"] {
            assert!(grid[key].as_u64().is_some(), "{panel}: gridPos.{key}");
        }
        assert!(grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(0) <= 24);
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["type"], "prometheus",
                "{}",
                panel["title"]
            );
        }
    }
    let exprs = dashboard_expressions(&dashboard);
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: no llmtap metric in {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{title}: {name} is not exported by llmtap ({expr})"
            );
            used.insert(name);
        }
    }
    // What the dashboard must show: tokens, cost, TTFT and duration, errors, truncations and
    // capture health.
    for needed in [
        "gen_ai_client_token_usage_sum",
        "llmtap_call_cost_usd_total",
        "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_operation_duration_seconds_count",
        "llmtap_call_finish_reasons_total",
        "llmtap_capture_lost_records_total",
        "llmtap_export_dropped_spans_total",
    ] {
        assert!(used.contains(needed), "the dashboard shows no {needed}");
    }

    let rules = std::fs::read_to_string(deploy("prometheus/llmtap-rules.yaml")).expect("rules");
    let mut rule_metrics = BTreeSet::new();
    // The `expr:` blocks (single line or `|` block), up to the next key.
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let mut text = expr.trim().trim_start_matches('|').to_string();
        let indent = line.len() - line.trim_start().len();
        while let Some(next) = lines.peek() {
            let next_indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && next_indent <= indent {
                break;
            }
            text.push('\n');
            text.push_str(next);
            lines.next();
        }
        rule_metrics.extend(metric_names(&text));
    }
    assert!(rule_metrics.len() >= 5, "{rule_metrics:?}");
    for name in &rule_metrics {
        assert!(exported.contains(name), "rules use {name}, not exported");
    }
}

#[test]
fn the_helm_chart_ships_the_same_rules_and_dashboard() {
    for (shipped, source) in [
        (
            "helm/llmtap/files/llmtap-rules.yaml",
            "prometheus/llmtap-rules.yaml",
        ),
        (
            "helm/llmtap/files/llmtap-dashboard.json",
            "grafana/llmtap-dashboard.json",
        ),
    ] {
        let a = std::fs::read(deploy(shipped)).expect(shipped);
        let b = std::fs::read(deploy(source)).expect(source);
        assert!(
            a == b,
            "deploy/{shipped} differs from deploy/{source}: copy it over"
        );
    }
}
