//! The stages of `llmtap` import one way (docs/architecture.md): this test reads every
//! `crate::…` and `super::…` path in `tracer-user/src` and fails on one that reaches a module
//! the table below does not allow. The table is the only place the allowed edges are written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of the library and the modules it may use. Data runs
/// capture → connection → http / http2 / sse → genai → export; shared vocabulary sits below
/// the stages, and the modules that wire stages together (pipeline, daemon, cli) above them.
const ALLOWED: &[(&str, &[&str])] = &[
    // Shared vocabulary: the plaintext streams, and facts about this machine.
    ("flow", &[]),
    ("host", &[]),
    ("credentials", &[]),
    ("budget", &[]),
    // Stage 1: kernel records → ordered plaintext per connection.
    ("capture", &["flow", "credentials"]),
    // Protocol parsers: bytes → HTTP exchanges and stream framings, capture unknown to them.
    ("http", &["flow", "credentials"]),
    ("http2", &["flow", "http"]),
    ("websocket", &["http", "testing"]),
    ("sse", &[]),
    // Test support (compiled for tests only): recordings replayed as capture output.
    ("testing", &["flow", "http", "http2", "sse"]),
    // Stage 2: per connection, dispatches bytes to the HTTP/1, HTTP/2 or WebSocket parser.
    (
        "connection",
        &["flow", "http", "http2", "websocket", "testing"],
    ),
    // Stage 3: HTTP exchanges → LLM call records.
    ("genai", &["flow", "http", "sse", "budget"]),
    // A metadata source, knowing nothing of the exporters that use it.
    ("k8s", &["host"]),
    // Stage 4: call records → spans, metrics, console, JSON lines.
    ("export", &["genai", "k8s", "host", "credentials"]),
    // Runs the stages after capture on recorded or live events.
    (
        "pipeline",
        &[
            "flow",
            "http",
            "connection",
            "sse",
            "genai",
            "testing",
            "budget",
        ],
    ),
    // The binary's building blocks: command-line options, checks, the capture-to-export loop.
    ("cli", &["capture", "pipeline"]),
    // `--config FILE`: flags from a TOML file, knowing only clap's view of the command.
    ("config", &[]),
    ("doctor", &["capture"]),
    (
        "daemon",
        &[
            "flow", "capture", "genai", "pipeline", "export", "testing", "budget",
        ],
    ),
];

/// One use of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

#[test]
fn imports_follow_the_stage_order() {
    let allowed = allowed_table();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    assert!(
        files.len() > 20,
        "found only {} files in {src:?}",
        files.len()
    );

    let mut modules = BTreeSet::new();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let Some(module_path) = module_path(rel) else {
            continue; // lib.rs (the root that declares the modules) and main.rs (the binary)
        };
        modules.insert(module_path[0].clone());
        let text = std::fs::read_to_string(file).expect("readable source");
        for edge in edges(&rel.display().to_string(), &module_path, &text) {
            match allowed.get(edge.from.as_str()) {
                Some(ok) if ok.contains(edge.to.as_str()) => {}
                _ => violations.push(edge),
            }
        }
    }

    let unplaced: Vec<_> = modules
        .iter()
        .filter(|m| !allowed.contains_key(m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from ALLOWED (give each its place in the stage order): {unplaced:?}"
    );
    let report: Vec<String> = violations
        .iter()
        .map(|e| format!("{}:{}: {} uses {}", e.file, e.line, e.from, e.to))
        .collect();
    assert!(
        report.is_empty(),
        "imports against the stage order (see docs/architecture.md):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_allowed_edges_have_no_cycle() {
    let allowed = allowed_table();
    // Kahn's algorithm: a module is placed once everything it uses is placed.
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while placed.len() < allowed.len() {
        let ready: Vec<&str> = allowed
            .iter()
            .filter(|(m, uses)| !placed.contains(*m) && uses.iter().all(|u| placed.contains(u)))
            .map(|(m, _)| *m)
            .collect();
        assert!(
            !ready.is_empty(),
            "ALLOWED has a cycle (or names an unknown module) among: {:?}",
            allowed
                .keys()
                .filter(|m| !placed.contains(*m))
                .collect::<Vec<_>>()
        );
        placed.extend(ready);
    }
}

/// The reader itself: grouped uses, `super` chains out of inline modules, and paths in
/// expressions are seen; comments and strings are not.
#[test]
fn the_reader_finds_every_form_of_path() {
    let text = r#"
        //! Mentions [`crate::export`] in a comment.
        use crate::{flow::Direction, http::{HttpEvent, ExchangeKey}};
        use super::super::genai::CallRecord;
        fn f() { let _ = crate::k8s::keys::NODE_NAME; let _ = "crate::cli"; }
        mod inner {
            use super::super::super::capture::Comm;
        }
    "#;
    let found: BTreeSet<(String, usize)> = edges("x/y.rs", &["x".into(), "y".into()], text)
        .into_iter()
        .map(|e| (e.to, e.line))
        .collect();
    let want: BTreeSet<(String, usize)> = [
        ("flow", 3),
        ("http", 3),
        ("genai", 4),
        ("k8s", 5),
        ("capture", 7),
    ]
    .into_iter()
    .map(|(m, l)| (m.to_string(), l))
    .collect();
    assert_eq!(found, want);
}

fn allowed_table() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut table = BTreeMap::new();
    for (module, uses) in ALLOWED {
        let previous = table.insert(*module, uses.iter().copied().collect());
        assert!(previous.is_none(), "{module} is listed twice in ALLOWED");
    }
    table
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `capture/event.rs` → `[capture, event]`, `http2/mod.rs` → `[http2]`; `None` for the crate
/// root and the binary.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    if rel == Path::new("lib.rs") || rel == Path::new("main.rs") {
        return None;
    }
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Every use of another top-level module in one file's `text`.
fn edges(file: &str, module_path: &[String], text: &str) -> Vec<Edge> {
    let tokens = tokenize(&code_only(text));
    let own = &module_path[0];
    let mut found = Vec::new();
    let mut edge = |to: &str, line: usize| {
        if to != own && to != "self" {
            found.push(Edge {
                from: own.clone(),
                to: to.to_string(),
                file: file.to_string(),
                line,
            });
        }
    };
    // Inline `mod name { … }` blocks: (brace depth inside the block, name).
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (tok, line) = &tokens[i];
        match tok {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some((Token::Ident(name), _)), Some((Token::Punct('{'), _))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline.push((depth + 1, name.clone()));
                }
            }
            Token::Ident(kw)
                if kw == "crate" && tokens.get(i + 1).map(|t| &t.0) == Some(&Token::PathSep) =>
            {
                for (to, l) in path_heads(&tokens, i + 2) {
                    edge(&to, l.max(*line));
                }
            }
            Token::Ident(kw) if kw == "super" => {
                let mut supers = 0;
                let mut j = i;
                while matches!(tokens.get(j), Some((Token::Ident(s), _)) if s == "super")
                    && tokens.get(j + 1).map(|t| &t.0) == Some(&Token::PathSep)
                {
                    supers += 1;
                    j += 2;
                }
                let depth_here = module_path.len() + inline.len();
                if supers >= depth_here {
                    for (to, l) in path_heads(&tokens, j) {
                        edge(&to, l.max(*line));
                    }
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The first segment of the path starting at `tokens[start]`, or of each path in a
/// `{ a::x, b::{y, z} }` group.
fn path_heads(tokens: &[(Token, usize)], start: usize) -> Vec<(String, usize)> {
    match tokens.get(start) {
        Some((Token::Ident(name), line)) => vec![(name.clone(), *line)],
        Some((Token::Punct('{'), _)) => {
            let mut heads = Vec::new();
            let mut level = 0;
            let mut expect_head = true;
            for (tok, line) in &tokens[start + 1..] {
                match tok {
                    Token::Punct('{') => level += 1,
                    Token::Punct('}') if level == 0 => break,
                    Token::Punct('}') => level -= 1,
                    Token::Punct(',') if level == 0 => expect_head = true,
                    Token::Ident(name) if level == 0 && expect_head => {
                        heads.push((name.clone(), *line));
                        expect_head = false;
                    }
                    _ => {}
                }
            }
            heads
        }
        _ => Vec::new(),
    }
}

fn tokenize(code: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push((Token::PathSep, line));
            i += 2;
        } else {
            tokens.push((Token::Punct(c), line));
            i += 1;
        }
    }
    tokens
}

/// `text` with comments and the contents of string and char literals blanked (line breaks
/// kept, so lines still count).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut level = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    level += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    level -= 1;
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // Raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(chars[j]));
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    out.push(blank(ch));
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // Escaped char literal: '\n', '\'', '\u{…}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // 'x'
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}
