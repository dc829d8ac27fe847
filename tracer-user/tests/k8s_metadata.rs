//! Kubernetes attribution end to end in user space: a fake API server speaking the real pod
//! list/watch JSON, processes whose cgroup files are containerd, CRI-O and Docker fixtures, and
//! the spans and metrics exported for their calls.

mod export_support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use export_support::*;
use llmtap::export::{ClockOffset, ExportArgs, ExporterOptions, Exporters, OtlpProtocol};
use llmtap::k8s::K8sMetadata;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/k8s");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{DATA}/{name}")).expect("fixture")
}

/// Serves the fixtures: the pod list, one watch stream (then held open), owner lookups.
/// Records each request line.
async fn start_fake_api_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        let mut watches = 0u32;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            watches += 1;
            let first_watch_allowed = watches;
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut content_length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            content_length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; content_length];
                    reader.read_exact(&mut body).await.ok();
                    let target = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    seen.lock().expect("lock").push(target.clone());
                    let path = target.split('?').next().unwrap_or("");
                    if path == "/api/v1/pods" && target.contains("watch=true") {
                        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                        write.write_all(head.as_bytes()).await.ok();
                        // Only the first watch replays the events; a re-watch just idles.
                        if first_watch_allowed > 0 && !target.contains("resourceVersion=1004") {
                            for event in fixture("watch.ndjson").lines() {
                                let chunk = format!("{:x}\r\n{event}\n\r\n", event.len() + 1);
                                write.write_all(chunk.as_bytes()).await.ok();
                            }
                        }
                        write.flush().await.ok();
                        // Hold the stream open, as a real API server does until its timeout.
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        return;
                    }
                    let (status, body) = match path {
                        "/api/v1/pods" => ("200 OK", fixture("podlist.json")),
                        "/apis/apps/v1/namespaces/shop/replicasets/web-7d9f8c6b5" => {
                            ("200 OK", fixture("replicaset-web-7d9f8c6b5.json"))
                        }
                        "/apis/batch/v1/namespaces/batch/jobs/nightly-29000000" => {
                            ("200 OK", fixture("job-nightly-29000000.json"))
                        }
                        _ => (
                            "404 Not Found",
                            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"not found","reason":"NotFound","code":404}"#.to_string(),
                        ),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if write.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), requests)
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const WEB_NEW: &str = "2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb";
const WEB_OLD: &str = "1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa";
const CRIO: &str = "4444dddd4444dddd4444dddd4444dddd4444dddd4444dddd4444dddd4444dddd";

#[tokio::test]
async fn spans_carry_the_pod_of_a_fixture_cgroup() {
    let (url, requests) = start_fake_api_server().await;
    let config = kube::Config::new(url.parse().expect("url"));
    let k8s = K8sMetadata::watch(config, "node-1".into()).expect("watch");

    // The list, then ADDED (CRI-O job pod), MODIFIED (web restarted: new container id) and
    // DELETED (finished pod) from the watch stream.
    let mut synced = false;
    for _ in 0..600 {
        let live = k8s.update(|s| s.live_len());
        if live == 3
            && k8s.lookup(Some(CRIO), None).is_some()
            && k8s.lookup(Some(WEB_NEW), None).is_some()
        {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = requests.lock().expect("lock").clone();
    assert!(
        synced,
        "watch never delivered the fixture events; requests: {seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.starts_with("/api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "pods are listed for this node only: {seen:?}"
    );
    assert!(
        k8s.lookup(Some(WEB_OLD), None).is_none(),
        "restarted container id forgotten"
    );

    // Processes: web (containerd, cgroup v2), the CronJob's pod (CRI-O), the log agent
    // (Docker, cgroup v1), and one on the host.
    let root = fake_proc(
        "k8s",
        &[
            (2001, &["/usr/bin/python3", "web.py"], "/usr/bin/python3"),
            (2002, &["/usr/bin/python3", "report.py"], "/usr/bin/python3"),
            (2003, &["/usr/bin/python3", "agent.py"], "/usr/bin/python3"),
            (2004, &["/usr/bin/python3", "host.py"], "/usr/bin/python3"),
        ],
    );
    for (pid, file) in [
        (2001, "cgroup-containerd-v2.txt"),
        (2002, "cgroup-crio-v2.txt"),
        (2003, "cgroup-docker-v1.txt"),
    ] {
        std::fs::write(root.join(pid.to_string()).join("cgroup"), fixture(file)).expect("cgroup");
    }

    let (endpoint, receiver) = start_http_receiver().await;
    let out = SharedBuf::default();
    let args = ExportArgs {
        outputs: vec![
            "jsonl=-".parse().expect("output"),
            "otlp".parse().expect("otlp"),
        ],
        otlp_endpoint: Some(endpoint),
        otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
        ..ExportArgs::default()
    };
    let mut exporters = Exporters::with_options(
        &args,
        ExporterOptions {
            clock: ClockOffset::fixed(CLOCK_OFFSET_NS),
            proc_root: root,
            stdout: Box::new(out.clone()),
            // As the DaemonSet sets it: names llmtap's own telemetry only.
            env: [("OTEL_SERVICE_NAME".to_string(), "llmtap".to_string())].into(),
            metric_interval: Some(Duration::from_secs(3600)),
            kubernetes: Some(k8s.clone()),
        },
    )
    .await
    .expect("exporters");
    for pid in 2001..=2004 {
        exporters.export(&openai_stream(pid, 10_000_000_000));
    }
    exporters.shutdown().await;

    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    let spans: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(spans.len(), 4, "{text}");
    let resource = |pid: i64| {
        spans
            .iter()
            .find(|s| s["resource"]["process.pid"] == pid)
            .map(|s| s["resource"].clone())
            .expect("span of pid")
    };
    // service.name is the traced workload (semconv order: Deployment, ..., CronJob, Job), and
    // the executable outside Kubernetes; OTEL_SERVICE_NAME (llmtap's own name) never.
    for (pid, service) in [
        (2001, "web"),
        (2002, "nightly"),
        (2003, "log-agent"),
        (2004, "python3"),
    ] {
        assert_eq!(resource(pid)["service.name"], service, "pid {pid}");
    }
    assert_eq!(resource(2001)["service.namespace"], "shop");
    assert!(resource(2004).get("service.namespace").is_none());
    let web = resource(2001);
    assert_eq!(web["container.id"], WEB_NEW);
    assert_eq!(web["k8s.pod.name"], "web-7d9f8c6b5-x2k4q");
    assert_eq!(web["k8s.pod.uid"], "6f1c1d5e-8a3b-4c2d-9e0f-112233445566");
    assert_eq!(web["k8s.namespace.name"], "shop");
    assert_eq!(web["k8s.container.name"], "app");
    assert_eq!(web["k8s.node.name"], "node-1");
    assert_eq!(web["k8s.replicaset.name"], "web-7d9f8c6b5");
    assert_eq!(web["k8s.deployment.name"], "web");

    let report = resource(2002);
    assert_eq!(report["container.id"], CRIO);
    assert_eq!(report["k8s.pod.name"], "nightly-29000000-h7x2p");
    assert_eq!(report["k8s.namespace.name"], "batch");
    assert_eq!(report["k8s.container.name"], "report");
    assert_eq!(report["k8s.job.name"], "nightly-29000000");
    assert_eq!(report["k8s.cronjob.name"], "nightly");

    let agent = resource(2003);
    assert_eq!(agent["k8s.pod.name"], "log-agent-9wz7t");
    assert_eq!(agent["k8s.namespace.name"], "kube-system");
    assert_eq!(agent["k8s.container.name"], "agent");
    assert_eq!(agent["k8s.daemonset.name"], "log-agent");
    assert!(agent.get("k8s.deployment.name").is_none());

    let host = resource(2004);
    assert!(host.get("container.id").is_none());
    assert!(
        host.as_object()
            .expect("object")
            .keys()
            .all(|k| !k.starts_with("k8s.")),
        "{host}"
    );

    // OTLP: the same resource per span; metrics carry the workload, and the agent's
    // resource names the node.
    let otlp_spans = receiver.spans();
    assert_eq!(otlp_spans.len(), 4);
    assert!(otlp_spans.iter().any(|(res, _)| {
        str_attr(res, "k8s.deployment.name").as_deref() == Some("web")
            && str_attr(res, "k8s.pod.name").as_deref() == Some("web-7d9f8c6b5-x2k4q")
            && str_attr(res, "service.name").as_deref() == Some("web")
    }));
    assert_eq!(
        str_attr(&receiver.metrics_resource(), "service.name").as_deref(),
        Some("llmtap")
    );
    assert_eq!(
        str_attr(&receiver.metrics_resource(), "k8s.node.name").as_deref(),
        Some("node-1")
    );
    let usage = receiver
        .metric("gen_ai.client.token.usage")
        .expect("token usage metric");
    let points = match usage.data {
        Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) => h.data_points,
        other => panic!("unexpected {other:?}"),
    };
    assert!(points.iter().any(|p| {
        str_attr(&p.attributes, "k8s.cronjob.name").as_deref() == Some("nightly")
            && str_attr(&p.attributes, "k8s.namespace.name").as_deref() == Some("batch")
    }));
    assert!(
        points
            .iter()
            .all(|p| str_attr(&p.attributes, "k8s.pod.name").is_none()),
        "no pod names on metrics"
    );
}
