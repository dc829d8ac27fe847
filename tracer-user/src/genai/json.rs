//! Small helpers to read `serde_json::Value`s without panicking on unexpected shapes.

use serde_json::Value;

/// `v[a][b]...` for object keys.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

/// Non-empty string at `path`.
pub fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Unsigned integer at `path` (accepts integral floats, as some servers send `12.0`).
pub fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let x = at(v, path)?;
    x.as_u64().or_else(|| {
        x.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e18)
            .map(|f| f as u64)
    })
}

pub fn f64_at(v: &Value, path: &[&str]) -> Option<f64> {
    at(v, path).and_then(Value::as_f64)
}

pub fn i64_at(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path).and_then(Value::as_i64)
}

/// A string, or each string of an array (`stop: "x"` or `stop: ["x", "y"]`).
pub fn strings_at(v: &Value, path: &[&str]) -> Vec<String> {
    match at(v, path) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Array at `path`, empty when absent.
pub fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A scalar as a string (`"rate_limit"` or `400` → `"400"`).
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
