//! `--compat openinference` emits OpenInference's own names: every name llmtap's code declares,
//! and every key of the spans it builds from the recorded exchanges (content capture on), is
//! checked against the Python package `openinference-semantic-conventions` (pinned in
//! `cargo xtask setup`, in tests/.venv), as are the span kinds, MIME types, providers and
//! systems it writes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use llmtap::export::attributes::AttrValue;
use llmtap::export::clock::ClockOffset;
use llmtap::export::openinference::{self, ProjectName, keys, mime_type, span_kind};
use llmtap::export::resource::ProcessResource;
use llmtap::export::span::{ContentCapture, SpanBuilder};
use llmtap::testing::{ReplayOptions, cassette_dir, cassette_events, load_all};
use llmtap::{Pipeline, PipelineConfig};
use llmtap_tests::repo_root;
use serde_json::Value;

/// Every string constant of the package's attribute classes, and the values of its enums.
const DUMP_CONVENTIONS: &str = r#"
import enum, importlib.metadata, inspect, json
import openinference.semconv.resource as resource
import openinference.semconv.trace as trace
names, enums = set(), {}
for module in (trace, resource):
    for class_name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != module.__name__:
            continue
        if issubclass(cls, enum.Enum):
            enums[class_name] = [member.value for member in cls]
        else:
            names.update(v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str))
print(json.dumps({
    "version": importlib.metadata.version("openinference-semantic-conventions"),
    "names": sorted(names),
    "enums": enums,
}))
"#;

struct Conventions {
    names: BTreeSet<String>,
    enums: BTreeMap<String, BTreeSet<String>>,
}

fn conventions() -> Conventions {
    let python = repo_root().join("tests/.venv/bin/python3");
    assert!(
        python.is_file(),
        "{} missing: run `cargo xtask setup`",
        python.display()
    );
    let out = Command::new(&python)
        .args(["-c", DUMP_CONVENTIONS])
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "openinference-semantic-conventions not importable (run `cargo xtask setup`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: Value = serde_json::from_slice(&out.stdout).expect("JSON from the dump");
    assert_eq!(dump["version"], "0.1.42", "the pinned version");
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let names = strings(&dump["names"]);
    // The dump itself must have worked: these are the package's best-known names.
    assert!(names.contains("llm.model_name") && names.contains("input.value"));
    let enums = dump["enums"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
        .unwrap_or_default();
    Conventions { names, enums }
}

impl Conventions {
    fn enum_values(&self, name: &str) -> &BTreeSet<String> {
        self.enums
            .get(name)
            .unwrap_or_else(|| panic!("the package has no enum {name}"))
    }

    /// A key is the package's name, or a flattened list item: `{list}.{i}.{item key}`, where
    /// the list and the item key (itself possibly a list) are the package's names, and an
    /// item key may nest one of the package's names (`message_content.image` + `image.url`).
    fn knows(&self, key: &str) -> bool {
        if self.names.contains(key) {
            return true;
        }
        // Split at the first numeric segment: list name, index, the rest.
        let segments: Vec<&str> = key.split('.').collect();
        if let Some(i) = segments
            .iter()
            .position(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        {
            let list = segments[..i].join(".");
            let rest = segments[i + 1..].join(".");
            return self.names.contains(&list) && !rest.is_empty() && self.knows(&rest);
        }
        // A nested object: a known name followed by a known name.
        (1..segments.len()).any(|cut| {
            self.names.contains(&segments[..cut].join("."))
                && self.names.contains(&segments[cut..].join("."))
        })
    }
}

#[test]
fn declared_names_and_values_are_openinference_ones() {
    let conventions = conventions();
    let unknown: Vec<&str> = keys::ALL
        .iter()
        .copied()
        .filter(|k| !conventions.names.contains(*k))
        .collect();
    assert!(unknown.is_empty(), "not OpenInference names: {unknown:?}");

    let kinds = conventions.enum_values("OpenInferenceSpanKindValues");
    for kind in span_kind::ALL {
        assert!(kinds.contains(*kind), "span kind {kind}");
    }
    let mimes = conventions.enum_values("OpenInferenceMimeTypeValues");
    for mime in mime_type::ALL {
        assert!(mimes.contains(*mime), "MIME type {mime}");
    }
    let providers = conventions.enum_values("OpenInferenceLLMProviderValues");
    for (genai, provider) in openinference::PROVIDERS {
        assert!(providers.contains(*provider), "{genai} → {provider}");
    }
    let systems = conventions.enum_values("OpenInferenceLLMSystemValues");
    for (api, system) in openinference::SYSTEMS {
        assert!(systems.contains(*system), "{api} → {system}");
    }
}

#[test]
fn every_emitted_key_is_an_openinference_name() {
    let conventions = conventions();
    let resource = Arc::new(ProcessResource {
        service_name: "python3".into(),
        pid: 1,
        executable_name: "python3".into(),
        executable_path: None,
        command_line: None,
        host_name: None,
        container_id: None,
        kubernetes: None,
        configured_attributes: Default::default(),
        openinference_project: Some(ProjectName::ServiceName),
    });
    let content = ContentCapture {
        enabled: true,
        max_bytes: 1 << 20,
    };
    let plain = SpanBuilder::new(ClockOffset::fixed(0), content);
    let compat = SpanBuilder::new(ClockOffset::fixed(0), content).with_openinference(true);
    let cassettes = load_all(&cassette_dir()).expect("cassettes");
    assert!(cassettes.len() > 20, "{} cassettes", cassettes.len());
    let mut emitted = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for cassette in &cassettes {
        let mut pipeline = Pipeline::new(PipelineConfig {
            capture_content: true,
            ..PipelineConfig::default()
        });
        let mut records = Vec::new();
        for event in cassette_events(cassette, &ReplayOptions::default()) {
            pipeline.push(event, &mut records);
        }
        pipeline.finish(&mut records);
        for record in &records {
            let without = plain.build(record, Arc::clone(&resource), Some(0.01));
            let with = compat.build(record, Arc::clone(&resource), Some(0.01));
            let genai: BTreeSet<&str> = without.attributes.iter().map(|(k, _)| *k).collect();
            for (key, value) in &with.attributes {
                if !genai.contains(key) {
                    emitted.insert(key.to_string());
                }
                if *key == keys::SPAN_KIND
                    && let AttrValue::Str(kind) = value
                {
                    kinds.insert(kind.clone());
                }
            }
            emitted.extend(with.flattened_attributes.iter().map(|(k, _)| k.clone()));
        }
    }
    // The recordings exercise the lists, not only the plain names.
    for needed in [
        "llm.input_messages.0.message.role",
        "llm.output_messages.0.message.content",
        keys::INPUT_VALUE,
        keys::LLM_TOKEN_COUNT_TOTAL,
    ] {
        assert!(emitted.contains(needed), "{needed} never emitted");
    }
    assert!(
        emitted
            .iter()
            .any(|k| k.contains(".message.tool_calls.0.tool_call.function.name")),
        "no tool call among the recordings"
    );
    let unknown: Vec<&String> = emitted.iter().filter(|k| !conventions.knows(k)).collect();
    assert!(unknown.is_empty(), "not OpenInference names: {unknown:?}");
    let known_kinds = conventions.enum_values("OpenInferenceSpanKindValues");
    assert!(kinds.iter().all(|k| known_kinds.contains(k)), "{kinds:?}");
    assert!(
        kinds.contains("LLM") && kinds.contains("EMBEDDING"),
        "{kinds:?}"
    );

    let resource_keys: Vec<&str> = resource.attributes().iter().map(|(k, _)| *k).collect();
    assert!(resource_keys.contains(&keys::PROJECT_NAME));
    assert!(conventions.names.contains(keys::PROJECT_NAME));
}
