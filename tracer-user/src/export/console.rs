//! Live console view: a row per call as it completes, each agent turn as a tree when it
//! closes (its calls, tools with the processes they ran, MCP requests), and a periodic
//! summary per process and model.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::Write,
    time::{Duration, Instant},
};

use opentelemetry::trace::SpanId;

use super::{
    attributes::{AttrValue, find, keys},
    metrics::HealthSnapshot,
    span::{CallSpan, SpanStatus},
};
use crate::genai::finish_reason_class;

/// Distinct (process, model) pairs kept in the summary; further pairs are counted as dropped.
const MAX_SUMMARY_KEYS: usize = 256;
/// Durations kept per pair for the median (the most recent ones).
const MAX_DURATION_SAMPLES: usize = 512;
/// Open turns whose children wait for the tree; past it the oldest turn's rows are printed
/// flat.
const MAX_OPEN_TURNS: usize = 256;
/// Rows kept per turn tree; further ones are counted on its last line.
const MAX_TREE_ROWS: usize = 64;
/// Processes named per tool row.
const MAX_TREE_PROCESSES: usize = 8;

/// One child of a turn, waiting for the turn to close.
#[derive(Debug)]
struct TreeRow {
    start_unix_nanos: u64,
    /// What the row says (without the timing columns).
    detail: String,
    duration_s: f64,
    /// The processes a tool ran: `name (duration)`.
    processes: Vec<String>,
}

/// The children of one open turn, in arrival order.
#[derive(Debug, Default)]
struct OpenTurn {
    rows: Vec<TreeRow>,
    more: u64,
    /// Arrival order, for evicting the oldest.
    seq: u64,
}

#[derive(Debug, Default)]
struct Aggregate {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    priced_calls: u64,
    errors: u64,
    durations_s: VecDeque<f64>,
}

impl Aggregate {
    fn median_duration_s(&self) -> Option<f64> {
        let mut sorted: Vec<f64> = self.durations_s.iter().copied().collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        Some(if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        })
    }
}

/// The console renderer.
pub struct Console {
    out: Box<dyn Write + Send>,
    header_written: bool,
    summary_interval: Option<Duration>,
    last_summary: Instant,
    /// (pid, executable, model) → totals.
    totals: BTreeMap<(u32, String, String), Aggregate>,
    dropped_summary_keys: u64,
    rows_since_summary: u64,
    health: Option<HealthSnapshot>,
    /// Turn span id → its children so far.
    open_turns: HashMap<SpanId, OpenTurn>,
    next_seq: u64,
}

fn str_attr<'a>(span: &'a CallSpan, key: &str) -> Option<&'a str> {
    match find(&span.attributes, key) {
        Some(AttrValue::Str(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn int_attr(span: &CallSpan, key: &str) -> Option<i64> {
    match find(&span.attributes, key) {
        Some(AttrValue::Int(n)) => Some(*n),
        _ => None,
    }
}

fn double_attr(span: &CallSpan, key: &str) -> Option<f64> {
    match find(&span.attributes, key) {
        Some(AttrValue::Double(x)) => Some(*x),
        _ => None,
    }
}

/// `HH:MM:SS.mmm` (UTC) of a UNIX nanosecond time.
fn clock_time(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let millis = (unix_nanos / 1_000_000) % 1000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        day / 3600,
        (day / 60) % 60,
        day % 60
    )
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn duration_s(span: &CallSpan) -> f64 {
    span.end_unix_nanos.saturating_sub(span.start_unix_nanos) as f64 / 1e9
}

/// The llmtap turn a span belongs to (a parent from the application's `traceparent` is not
/// one).
fn turn_of(span: &CallSpan) -> Option<SpanId> {
    span.parent_span_id.filter(|_| !span.parent_is_remote)
}

/// What a tool execution or MCP request row says.
fn agent_detail(span: &CallSpan) -> String {
    if let Some(method) = str_attr(span, keys::MCP_METHOD_NAME) {
        // An MCP request: the method (or tool) and its server, then how it ended.
        let outcome = match str_attr(span, keys::ERROR_TYPE) {
            Some(e) => format!("error:{e}"),
            None => "ok".to_string(),
        };
        let target = str_attr(span, keys::TOOL_NAME)
            .map(|t| format!("{method} {t}"))
            .unwrap_or_else(|| span.name.clone());
        format!(
            "mcp {} @{} {}",
            target,
            str_attr(span, keys::SERVER_ADDRESS).unwrap_or("-"),
            outcome
        )
    } else {
        format!(
            "{} [{}]",
            span.name,
            str_attr(span, keys::TOOL_CALL_ID).unwrap_or("-")
        )
    }
}

/// The processes a tool ran, from its `llmtap.process` events: `name (duration)`.
fn processes_of(span: &CallSpan) -> Vec<String> {
    let mut out: Vec<String> = span
        .events
        .iter()
        .take(MAX_TREE_PROCESSES)
        .filter_map(|e| {
            let name = match find(&e.attributes, keys::PROCESS_EXECUTABLE_NAME)? {
                AttrValue::Str(s) => s.as_str(),
                _ => return None,
            };
            Some(match find(&e.attributes, keys::LLMTAP_PROCESS_DURATION) {
                Some(AttrValue::Double(d)) => format!("{name} ({d:.3}s)"),
                _ => format!("{name} (running)"),
            })
        })
        .collect();
    if span.events.len() > MAX_TREE_PROCESSES {
        out.push(format!("… {} more", span.events.len() - MAX_TREE_PROCESSES));
    }
    out
}

impl Console {
    /// `summary_interval`: `None` prints the summary only at shutdown.
    pub fn new(out: Box<dyn Write + Send>, summary_interval: Option<Duration>) -> Self {
        Self {
            out,
            header_written: false,
            summary_interval,
            last_summary: Instant::now(),
            totals: BTreeMap::new(),
            dropped_summary_keys: 0,
            rows_since_summary: 0,
            health: None,
            open_turns: HashMap::new(),
            next_seq: 0,
        }
    }

    /// The capture health shown under the next summary.
    pub fn set_health(&mut self, health: HealthSnapshot) {
        self.health = Some(health);
    }

    /// An agent span: a tool execution or MCP request under a turn waits for the turn's tree;
    /// an `invoke_agent` span prints that tree; an MCP request outside any turn is a row.
    pub fn write_agent(&mut self, span: &CallSpan) -> std::io::Result<()> {
        if str_attr(span, keys::OPERATION_NAME) == Some("invoke_agent") {
            return self.write_turn(span);
        }
        let row = TreeRow {
            start_unix_nanos: span.start_unix_nanos,
            detail: agent_detail(span),
            duration_s: duration_s(span),
            processes: processes_of(span),
        };
        match turn_of(span) {
            Some(turn) => self.add_to_turn(turn, row),
            None => {
                let process = format!("{}/{}", span.resource.pid, span.resource.executable_name);
                self.write_row(
                    span.end_unix_nanos,
                    &process,
                    &format!("├ {}", row.detail),
                    &row,
                )
            }
        }
    }

    /// One line of the tree area: time, process, what, duration; then its processes.
    fn write_row(
        &mut self,
        end_unix_nanos: u64,
        process: &str,
        detail: &str,
        row: &TreeRow,
    ) -> std::io::Result<()> {
        writeln!(
            self.out,
            "{:<12} {:<22} {:<70} {:>9}",
            clock_time(end_unix_nanos),
            fit(process, 22),
            fit(detail, 70),
            format!("{:.3}s", row.duration_s),
        )?;
        if !row.processes.is_empty() {
            let continuation = if detail.starts_with("├") {
                "│"
            } else {
                " "
            };
            writeln!(
                self.out,
                "{:<12} {:<22} {}",
                "",
                "",
                fit(
                    &format!("{continuation}    ran {}", row.processes.join(", ")),
                    80
                ),
            )?;
        }
        self.out.flush()
    }

    fn add_to_turn(&mut self, turn: SpanId, row: TreeRow) -> std::io::Result<()> {
        if !self.open_turns.contains_key(&turn) && self.open_turns.len() >= MAX_OPEN_TURNS {
            // A turn that never closed (llmtap stopped following its process): its rows are
            // printed flat rather than kept without bound.
            if let Some((&oldest, _)) = self.open_turns.iter().min_by_key(|(_, t)| t.seq) {
                if let Some(old) = self.open_turns.remove(&oldest) {
                    for r in &old.rows {
                        self.write_row(r.start_unix_nanos, "", &format!("├ {}", r.detail), r)?;
                    }
                }
            }
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let open = self.open_turns.entry(turn).or_insert_with(|| OpenTurn {
            seq,
            ..Default::default()
        });
        if open.rows.len() >= MAX_TREE_ROWS {
            open.more += 1;
        } else {
            open.rows.push(row);
        }
        Ok(())
    }

    /// A closed turn: its line, then its children by start time, each with its offset from
    /// the turn's start.
    fn write_turn(&mut self, span: &CallSpan) -> std::io::Result<()> {
        let process = format!("{}/{}", span.resource.pid, span.resource.executable_name);
        let head = TreeRow {
            start_unix_nanos: span.start_unix_nanos,
            detail: String::new(),
            duration_s: duration_s(span),
            processes: Vec::new(),
        };
        let conversation = str_attr(span, keys::CONVERSATION_ID)
            .map(|c| format!(" conversation {c}"))
            .unwrap_or_default();
        let title = format!(
            "▼ {} ({} calls, {} tools){conversation}",
            span.name,
            opt(int_attr(span, keys::LLMTAP_AGENT_CALLS)),
            opt(int_attr(span, keys::LLMTAP_AGENT_TOOL_EXECUTIONS)),
        );
        self.write_row(span.end_unix_nanos, &process, &title, &head)?;
        let mut open = self.open_turns.remove(&span.span_id).unwrap_or_default();
        open.rows.sort_by_key(|r| r.start_unix_nanos);
        let count = open.rows.len();
        for (i, row) in open.rows.iter().enumerate() {
            let last = i + 1 == count && open.more == 0;
            let offset = row.start_unix_nanos.saturating_sub(span.start_unix_nanos) as f64 / 1e9;
            let detail = format!(
                "{} +{offset:.3}s {}",
                if last { "└─" } else { "├─" },
                row.detail
            );
            self.write_row_indented(&detail, row, last)?;
        }
        if open.more > 0 {
            writeln!(self.out, "{:<12} {:<22} └─ … {} more", "", "", open.more)?;
        }
        self.out.flush()
    }

    fn write_row_indented(
        &mut self,
        detail: &str,
        row: &TreeRow,
        last: bool,
    ) -> std::io::Result<()> {
        writeln!(
            self.out,
            "{:<12} {:<22} {:<70} {:>9}",
            "",
            "",
            fit(detail, 70),
            format!("{:.3}s", row.duration_s),
        )?;
        if !row.processes.is_empty() {
            let continuation = if last { " " } else { "│" };
            writeln!(
                self.out,
                "{:<12} {:<22} {}",
                "",
                "",
                fit(
                    &format!("{continuation}    ran {}", row.processes.join(", ")),
                    80
                ),
            )?;
        }
        Ok(())
    }

    /// Writes the row of a finished call, then the summary when the interval has elapsed.
    pub fn write_call(&mut self, span: &CallSpan) -> std::io::Result<()> {
        if !self.header_written {
            writeln!(
                self.out,
                "{:<12} {:<22} {:<16} {:<28} {:>15} {:>8} {:>8} {:<14} {:>10}",
                "TIME(UTC)",
                "PID/COMM",
                "PROVIDER",
                "MODEL",
                "TOKENS IN→OUT",
                "TTFT",
                "DURATION",
                "FINISH",
                "COST"
            )?;
            self.header_written = true;
        }
        let model = str_attr(span, keys::RESPONSE_MODEL)
            .or_else(|| str_attr(span, keys::REQUEST_MODEL))
            .unwrap_or("-");
        let tokens = format!(
            "{}→{}",
            opt(int_attr(span, keys::USAGE_INPUT_TOKENS)),
            opt(int_attr(span, keys::USAGE_OUTPUT_TOKENS))
        );
        let ttft =
            opt(double_attr(span, keys::RESPONSE_TIME_TO_FIRST_CHUNK).map(|s| format!("{s:.3}s")));
        let duration_s = span.end_unix_nanos.saturating_sub(span.start_unix_nanos) as f64 / 1e9;
        let finish = match (
            &span.status,
            find(&span.attributes, keys::RESPONSE_FINISH_REASONS),
        ) {
            (SpanStatus::Error { .. }, _) => {
                format!("error:{}", str_attr(span, keys::ERROR_TYPE).unwrap_or("?"))
            }
            // One vocabulary whatever the API (`tool_calls`, `tool_use`, derived `tool_call`).
            (_, Some(AttrValue::StrArray(reasons))) => reasons
                .iter()
                .map(|r| finish_reason_class(r))
                .collect::<Vec<_>>()
                .join(","),
            _ => "-".to_string(),
        };
        // Either convention's cost key (OTEL_SEMCONV_STABILITY_OPT_IN).
        let cost = super::semconv::cost_usd(&span.attributes);
        let process = format!("{}/{}", span.resource.pid, span.resource.executable_name);
        writeln!(
            self.out,
            "{:<12} {:<22} {:<16} {:<28} {:>15} {:>8} {:>8} {:<14} {:>10}",
            clock_time(span.end_unix_nanos),
            fit(&process, 22),
            fit(str_attr(span, keys::PROVIDER_NAME).unwrap_or("-"), 16),
            fit(model, 28),
            tokens,
            ttft,
            format!("{duration_s:.3}s"),
            fit(&finish, 14),
            opt(cost.map(|c| format!("${c:.6}"))),
        )?;
        self.out.flush()?;
        if let Some(turn) = turn_of(span) {
            let detail = format!(
                "{} {} {} {}",
                span.name,
                fit(str_attr(span, keys::PROVIDER_NAME).unwrap_or("-"), 16),
                tokens,
                finish
            );
            self.add_to_turn(
                turn,
                TreeRow {
                    start_unix_nanos: span.start_unix_nanos,
                    detail,
                    duration_s,
                    processes: Vec::new(),
                },
            )?;
        }

        let key = (
            span.resource.pid,
            span.resource.executable_name.clone(),
            model.to_string(),
        );
        if self.totals.len() >= MAX_SUMMARY_KEYS && !self.totals.contains_key(&key) {
            self.dropped_summary_keys += 1;
        } else {
            let agg = self.totals.entry(key).or_default();
            agg.calls += 1;
            agg.input_tokens += int_attr(span, keys::USAGE_INPUT_TOKENS).unwrap_or(0).max(0) as u64;
            agg.output_tokens += int_attr(span, keys::USAGE_OUTPUT_TOKENS)
                .unwrap_or(0)
                .max(0) as u64;
            if let Some(c) = cost {
                agg.cost_usd += c;
                agg.priced_calls += 1;
            }
            if matches!(span.status, SpanStatus::Error { .. }) {
                agg.errors += 1;
            }
            if agg.durations_s.len() == MAX_DURATION_SAMPLES {
                agg.durations_s.pop_front();
            }
            agg.durations_s.push_back(duration_s);
        }
        self.rows_since_summary += 1;
        if let Some(interval) = self.summary_interval
            && self.last_summary.elapsed() >= interval
        {
            self.write_summary()?;
        }
        Ok(())
    }

    /// Writes the totals per process and model since start.
    pub fn write_summary(&mut self) -> std::io::Result<()> {
        self.last_summary = Instant::now();
        if self.totals.is_empty() {
            return Ok(());
        }
        writeln!(
            self.out,
            "── summary ── {:<22} {:<28} {:>6} {:>7} {:>10} {:>10} {:>12} {:>9}",
            "PID/COMM", "MODEL", "CALLS", "ERRORS", "IN TOK", "OUT TOK", "COST", "P50 DUR"
        )?;
        for ((pid, exe, model), agg) in &self.totals {
            let cost = if agg.priced_calls > 0 {
                format!("${:.6}", agg.cost_usd)
            } else {
                "-".to_string()
            };
            writeln!(
                self.out,
                "              {:<22} {:<28} {:>6} {:>7} {:>10} {:>10} {:>12} {:>9}",
                fit(&format!("{pid}/{exe}"), 22),
                fit(model, 28),
                agg.calls,
                agg.errors,
                agg.input_tokens,
                agg.output_tokens,
                cost,
                opt(agg.median_duration_s().map(|d| format!("{d:.3}s"))),
            )?;
        }
        if self.dropped_summary_keys > 0 {
            writeln!(
                self.out,
                "              ({} calls of further process/model pairs not summarised)",
                self.dropped_summary_keys
            )?;
        }
        if let Some(h) = &self.health {
            writeln!(
                self.out,
                "              capture: {} events, {} bytes, {} ring-buffer drops, {} parse errors",
                h.capture_events, h.capture_bytes, h.ring_buffer_drops, h.parse_errors
            )?;
        }
        self.rows_since_summary = 0;
        self.out.flush()
    }

    /// Final summary (if anything happened since the last one).
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.rows_since_summary > 0 {
            self.write_summary()?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::export::{
        clock::ClockOffset,
        resource::ProcessResource,
        span::{ContentCapture, SpanBuilder, tests::streamed_chat},
    };

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl SharedBuf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().map(|b| b.clone()).unwrap_or_default())
                .unwrap_or_default()
        }
    }

    fn span(duration_ns: u64, cost: Option<f64>) -> CallSpan {
        let mut record = streamed_chat();
        record.timing.response_end_ns = record.timing.request_start_ns + duration_ns;
        let resource = Arc::new(ProcessResource {
            service_name: "python3".into(),
            pid: 4242,
            executable_name: "python3".into(),
            executable_path: None,
            command_line: None,
            host_name: None,
            container_id: None,
            kubernetes: None,
            configured_attributes: Default::default(),
            openinference_project: None,
        });
        // 12:34:56.789 UTC on some day.
        let offset = 86_400 * 19_000 * 1_000_000_000 + 45_296_789_000_000 - 1_000_000_000;
        SpanBuilder::new(
            ClockOffset::fixed(offset),
            ContentCapture {
                enabled: false,
                max_bytes: 0,
            },
        )
        .build(&record, resource, cost)
    }

    #[test]
    fn rows_then_summary_with_median() {
        let buf = SharedBuf::default();
        let mut console = Console::new(Box::new(buf.clone()), None);
        console.write_call(&span(1_000_000_000, Some(0.0002))).ok();
        console.write_call(&span(3_000_000_000, Some(0.0001))).ok();
        console.write_call(&span(2_000_000_000, None)).ok();
        let rows = buf.text();
        let lines: Vec<&str> = rows.lines().collect();
        assert_eq!(lines.len(), 4, "{rows}");
        assert!(lines[0].starts_with("TIME(UTC)"));
        let row = lines[1];
        for part in [
            "12:34:57.789",
            "4242/python3",
            "openai",
            "gpt-4o-mini-2024-07-18",
            "1130→9",
            "0.350s",
            "1.000s",
            "stop",
            "$0.000200",
        ] {
            assert!(row.contains(part), "{part:?} missing in {row}");
        }
        assert!(
            lines[3].trim_end().ends_with('-'),
            "unpriced call shows '-' cost: {}",
            lines[3]
        );
        console.finish().ok();
        let all = buf.text();
        let summary = all.lines().last().unwrap_or_default();
        // 3 calls, 3×1130 in, 3×9 out, $0.0003, median of 1, 3, 2 s = 2 s
        for part in ["4242/python3", " 3 ", "3390", "27", "$0.000300", "2.000s"] {
            assert!(summary.contains(part), "{part:?} missing in {summary}");
        }
        // Nothing new: no second summary.
        let before = buf.text().len();
        console.finish().ok();
        assert_eq!(buf.text().len(), before);
    }

    /// A chat call's raw `tool_calls` shows in the same vocabulary as a Responses call's.
    #[test]
    fn finish_column_uses_one_vocabulary() {
        let buf = SharedBuf::default();
        let mut console = Console::new(Box::new(buf.clone()), None);
        let mut call = span(1_000_000_000, None);
        for (key, value) in &mut call.attributes {
            if *key == keys::RESPONSE_FINISH_REASONS {
                *value = AttrValue::StrArray(vec!["tool_calls".into()]);
            }
        }
        console.write_call(&call).ok();
        let text = buf.text();
        let row = text.lines().nth(1).unwrap_or_default();
        assert!(row.contains(" tool_call "), "{row}");
        assert!(!row.contains("tool_calls"), "{row}");
    }

    #[test]
    fn periodic_summary_after_interval() {
        let buf = SharedBuf::default();
        let mut console = Console::new(Box::new(buf.clone()), Some(Duration::ZERO));
        console.set_health(HealthSnapshot {
            capture_events: 10,
            capture_bytes: 2048,
            ring_buffer_drops: 1,
            parse_errors: 0,
            ..HealthSnapshot::default()
        });
        console.write_call(&span(1_000_000_000, None)).ok();
        let text = buf.text();
        assert!(text.contains("── summary ──"), "{text}");
        assert!(
            text.contains("capture: 10 events, 2048 bytes, 1 ring-buffer drops, 0 parse errors"),
            "{text}"
        );
    }

    #[test]
    fn errors_show_their_type() {
        let mut record = streamed_chat();
        record.error = Some(crate::genai::CallError {
            error_type: "429".into(),
            http_status: Some(429),
            mid_stream: false,
            message: None,
        });
        let resource = span(1, None).resource;
        let s = SpanBuilder::new(
            ClockOffset::fixed(0),
            ContentCapture {
                enabled: false,
                max_bytes: 0,
            },
        )
        .build(&record, resource, None);
        let buf = SharedBuf::default();
        let mut console = Console::new(Box::new(buf.clone()), None);
        console.write_call(&s).ok();
        assert!(buf.text().contains("error:429"), "{}", buf.text());
    }

    /// A turn prints as a tree when it closes: its calls and tools by start time, each tool
    /// with the processes it ran; nothing of the turn is printed before, but its calls.
    #[test]
    fn a_closed_turn_prints_as_a_tree() {
        let buf = SharedBuf::default();
        let mut console = Console::new(Box::new(buf.clone()), None);
        let turn_id = SpanId::from_bytes([7; 8]);
        let mut first = span(1_000_000_000, None);
        first.parent_span_id = Some(turn_id);
        let mut second = span(1_000_000_000, None);
        second.parent_span_id = Some(turn_id);
        second.start_unix_nanos += 3_000_000_000;
        second.end_unix_nanos += 3_000_000_000;
        let mut tool = first.clone();
        tool.name = "execute_tool get_weather".into();
        tool.start_unix_nanos = first.end_unix_nanos;
        tool.end_unix_nanos = second.start_unix_nanos;
        tool.attributes = vec![
            (keys::OPERATION_NAME, AttrValue::Str("execute_tool".into())),
            (keys::TOOL_CALL_ID, AttrValue::Str("call_1".into())),
        ];
        tool.events = vec![crate::export::span::SpanEvent {
            name: crate::export::span::PROCESS_EVENT,
            time_unix_nanos: tool.start_unix_nanos,
            attributes: vec![
                (
                    keys::PROCESS_EXECUTABLE_NAME,
                    AttrValue::Str("pytest".into()),
                ),
                (keys::LLMTAP_PROCESS_DURATION, AttrValue::Double(1.5)),
            ],
        }];
        let mut turn = first.clone();
        turn.name = "invoke_agent".into();
        turn.span_id = turn_id;
        turn.parent_span_id = None;
        turn.end_unix_nanos = second.end_unix_nanos;
        turn.attributes = vec![
            (keys::OPERATION_NAME, AttrValue::Str("invoke_agent".into())),
            (keys::LLMTAP_AGENT_CALLS, AttrValue::Int(2)),
            (keys::LLMTAP_AGENT_TOOL_EXECUTIONS, AttrValue::Int(1)),
        ];
        console.write_call(&first).ok();
        console.write_agent(&tool).ok();
        console.write_call(&second).ok();
        let before = buf.text();
        assert!(
            !before.contains("execute_tool"),
            "tools wait for the tree: {before}"
        );
        console.write_agent(&turn).ok();
        let text = buf.text();
        let tree: Vec<&str> = text.lines().skip(before.lines().count()).collect();
        assert_eq!(tree.len(), 5, "{text}");
        assert!(
            tree[0].contains("▼ invoke_agent (2 calls, 1 tools)"),
            "{text}"
        );
        assert!(tree[0].trim_end().ends_with("4.000s"), "{text}");
        assert!(tree[1].contains("├─ +0.000s chat"), "{text}");
        assert!(
            tree[2].contains("├─ +1.000s execute_tool get_weather [call_1]"),
            "{text}"
        );
        assert!(tree[2].trim_end().ends_with("2.000s"), "{text}");
        assert!(tree[3].contains("│    ran pytest (1.500s)"), "{text}");
        assert!(tree[4].contains("└─ +3.000s chat"), "{text}");
        assert!(console.open_turns.is_empty());
    }

    /// Turns that never close cannot hold rows without bound.
    #[test]
    fn open_turns_are_bounded() {
        let buf = SharedBuf::default();
        let mut console = Console::new(Box::new(buf.clone()), None);
        for i in 0..(MAX_OPEN_TURNS as u64 + 10) {
            let mut call = span(1_000_000, None);
            call.parent_span_id = Some(SpanId::from_bytes((i + 1).to_be_bytes()));
            console.write_call(&call).ok();
        }
        assert_eq!(console.open_turns.len(), MAX_OPEN_TURNS);
    }

    #[test]
    fn clock_time_formats_utc() {
        assert_eq!(clock_time(45_296_789_000_000), "12:34:56.789");
    }
}
