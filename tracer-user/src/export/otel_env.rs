//! The `OTEL_*` environment variables llmtap reads itself, parsed as the OpenTelemetry SDK
//! configuration specification says: key-value lists (`OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_*HEADERS`), millisecond timeouts, per-signal variables that take
//! precedence over the generic ones. A bad value is warned about and left out, never fatal
//! (the variables are often set fleet-wide, for other programs too).

use std::{collections::HashMap, time::Duration};

use percent_encoding::percent_decode_str;

/// The variables, as a map (the process environment, or a test's).
pub type Env = HashMap<String, String>;

/// A variable's value, trimmed; unset and empty are the same (the spec treats empty as unset).
pub fn non_empty<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// The first of `OTEL_EXPORTER_OTLP_{SIGNAL}_{SUFFIX}` and `OTEL_EXPORTER_OTLP_{SUFFIX}` that is
/// set, with the name it came from.
pub fn otlp_var<'a>(env: &'a Env, signal: &str, suffix: &str) -> Option<(String, &'a str)> {
    [
        format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|name| non_empty(env, &name).map(|value| (name, value)))
}

/// The process environment; variables whose name or value is not UTF-8 are left out (none of
/// the ones llmtap reads may be such).
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// A `key1=value1,key2=value2` list (W3C Baggage without properties), keys and values
/// percent-decoded and trimmed. An entry without `=`, with an empty key or with a malformed
/// escape is warned about (naming `var` and the entry's position, never its value: header
/// lists hold credentials) and skipped; the others are kept. A repeated key keeps its last
/// value.
pub fn parse_key_value_list(var: &str, value: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (index, entry) in value.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        match parse_entry(entry) {
            Ok((key, value)) => {
                pairs.retain(|(k, _)| *k != key);
                pairs.push((key, value));
            }
            Err(reason) => log::warn!("{var}: entry {} ignored: {reason}", index + 1),
        }
    }
    pairs
}

fn parse_entry(entry: &str) -> Result<(String, String), &'static str> {
    let (key, value) = entry.split_once('=').ok_or("expected key=value")?;
    let key = decode(key.trim())?;
    if key.is_empty() {
        return Err("empty key");
    }
    Ok((key, decode(value.trim())?))
}

/// Percent-decodes; a `%` not followed by two hex digits is an error (the spec asks values to
/// be discarded on a decoding failure), invalid UTF-8 becomes U+FFFD as W3C Baggage says.
fn decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        let escape = bytes.get(i + 1..i + 3);
        if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
            return Err("malformed percent escape");
        }
    }
    Ok(percent_decode_str(s).decode_utf8_lossy().into_owned())
}

/// `OTEL_RESOURCE_ATTRIBUTES`, parsed (values are strings, as the spec says).
pub fn resource_attributes(env: &Env) -> Vec<(String, String)> {
    const VAR: &str = "OTEL_RESOURCE_ATTRIBUTES";
    non_empty(env, VAR)
        .map(|v| parse_key_value_list(VAR, v))
        .unwrap_or_default()
}

/// The name of llmtap's own telemetry (its metrics): `OTEL_SERVICE_NAME`, else `service.name`
/// from `OTEL_RESOURCE_ATTRIBUTES`, else `llmtap`. Traced processes are never named by it.
pub fn agent_service_name(env: &Env, resource_attributes: &[(String, String)]) -> String {
    non_empty(env, "OTEL_SERVICE_NAME")
        .map(str::to_string)
        .or_else(|| {
            resource_attributes
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "llmtap".to_string())
}

/// A timeout variable: an integer number of milliseconds (spec). Invalid values are warned
/// about and ignored.
pub fn timeout_millis(name: &str, value: &str) -> Option<Duration> {
    match value.parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => {
            log::warn!("{name}={value} is not a number of milliseconds: ignored");
            None
        }
    }
}

/// A boolean variable: only `true` (any case) is true, as the spec says.
pub fn is_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resource_attributes_are_split_trimmed_and_percent_decoded() {
        let parsed = parse_key_value_list(
            "OTEL_RESOURCE_ATTRIBUTES",
            " deployment.environment.name = prod ,team=ai%2Cml,note=a%3Db%20c,k8s.cluster.name=eu-1",
        );
        assert_eq!(
            parsed,
            pairs(&[
                ("deployment.environment.name", "prod"),
                ("team", "ai,ml"),
                ("note", "a=b c"),
                ("k8s.cluster.name", "eu-1"),
            ])
        );
        // A value may itself contain '=' (only the first one separates) and be empty.
        assert_eq!(
            parse_key_value_list("V", "a=b=c,empty="),
            pairs(&[("a", "b=c"), ("empty", "")])
        );
        // Invalid UTF-8 after decoding becomes U+FFFD; the last of a repeated key wins.
        assert_eq!(
            parse_key_value_list("V", "x=%FF,k=1,k=2"),
            pairs(&[("x", "\u{FFFD}"), ("k", "2")])
        );
    }

    #[test]
    fn bad_entries_are_skipped_and_the_rest_kept() {
        let parsed = parse_key_value_list(
            "OTEL_RESOURCE_ATTRIBUTES",
            "good=1,novalue,=nokey,bad=%zz,trail=%4,,  ,also.good=2,%=x",
        );
        assert_eq!(parsed, pairs(&[("good", "1"), ("also.good", "2")]));
        for hostile in [
            "%",
            "=",
            ",,,",
            "%%%%=%%",
            "a=%",
            "\u{0}=\u{0}",
            "é=ü%C3%BC",
        ] {
            // Never a panic, whatever the input.
            let _ = parse_key_value_list("V", hostile);
        }
        assert_eq!(
            parse_key_value_list("V", "é=ü%C3%BC"),
            pairs(&[("é", "üü")])
        );
    }

    #[test]
    fn service_name_of_llmtap_itself() {
        let attrs = pairs(&[("service.name", "from-attrs")]);
        assert_eq!(agent_service_name(&env(&[]), &[]), "llmtap");
        assert_eq!(agent_service_name(&env(&[]), &attrs), "from-attrs");
        // OTEL_SERVICE_NAME takes precedence over OTEL_RESOURCE_ATTRIBUTES (spec).
        assert_eq!(
            agent_service_name(&env(&[("OTEL_SERVICE_NAME", "tap")]), &attrs),
            "tap"
        );
        assert_eq!(
            agent_service_name(&env(&[("OTEL_SERVICE_NAME", " ")]), &[]),
            "llmtap"
        );
        let from_env = resource_attributes(&env(&[("OTEL_RESOURCE_ATTRIBUTES", "a=1")]));
        assert_eq!(from_env, pairs(&[("a", "1")]));
    }

    #[test]
    fn signal_variables_take_precedence() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", ""),
        ]);
        assert_eq!(
            otlp_var(&e, "TRACES", "TIMEOUT"),
            Some(("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT".to_string(), "250"))
        );
        // Empty is unset: the generic variable applies.
        assert_eq!(
            otlp_var(&e, "METRICS", "TIMEOUT"),
            Some(("OTEL_EXPORTER_OTLP_TIMEOUT".to_string(), "1000"))
        );
        assert_eq!(otlp_var(&e, "TRACES", "HEADERS"), None);
        assert_eq!(timeout_millis("T", "250"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_millis("T", "10s"), None);
        assert!(is_true("TRUE") && !is_true("1"));
    }
}
