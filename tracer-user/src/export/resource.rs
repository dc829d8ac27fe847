//! The OpenTelemetry resource of a traced process, read from `/proc` and cached per pid.
//!
//! Calls are reported after the fact, so the process may already have exited: every field is
//! optional and the executable name falls back to the kernel `comm` carried in the call record.
//!
//! `service.name` is the traced workload, never llmtap (`OTEL_SERVICE_NAME` names llmtap's own
//! telemetry): `--service-name` when given, else the Kubernetes workload (the semantic
//! conventions' order: Deployment, ReplicaSet, StatefulSet, DaemonSet, CronJob, Job, else the
//! pod), else the executable name. `OTEL_RESOURCE_ATTRIBUTES` adds to every resource the
//! entries llmtap does not read from the process itself.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    attributes::{AttrValue, Attributes, from_strings, keys},
    openinference::{self, ProjectName},
    redact,
};
use crate::genai::ProcessRef;
use crate::host::local_host_name;
use crate::k8s::{K8sMetadata, PodAttributes};

/// What llmtap reports as `telemetry.sdk.name`.
pub const SDK_NAME: &str = "llmtap";

/// One traced process as an OpenTelemetry resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessResource {
    pub service_name: String,
    pub pid: u32,
    pub executable_name: String,
    pub executable_path: Option<String>,
    /// Arguments joined by spaces, secrets redacted.
    pub command_line: Option<String>,
    pub host_name: Option<String>,
    pub container_id: Option<String>,
    /// Pod, container and workload (`k8s.*`) when llmtap watches a cluster.
    pub kubernetes: Option<Arc<PodAttributes>>,
    /// `OTEL_RESOURCE_ATTRIBUTES` entries for traced processes (shared by every resource).
    pub configured_attributes: Arc<[(String, String)]>,
    /// `openinference.project.name` (`--compat openinference`).
    pub openinference_project: Option<ProjectName>,
}

/// `OTEL_RESOURCE_ATTRIBUTES` keys that describe a service's own identity: they name llmtap
/// (its metrics resource), not the processes it traces.
const AGENT_ONLY_KEYS: &[&str] = &["service.name", "service.version", "service.instance.id"];

/// `service.name` of a pod's process: its workload, in the order the semantic conventions give
/// for Kubernetes, else the pod.
pub fn workload_service_name(pod: &PodAttributes) -> &str {
    let w = &pod.workload;
    [
        &w.deployment,
        &w.replicaset,
        &w.statefulset,
        &w.daemonset,
        &w.cronjob,
        &w.job,
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(&pod.pod_name)
}

impl ProcessResource {
    /// Resource attributes in a fixed order.
    pub fn attributes(&self) -> Attributes {
        let mut attrs: Attributes = vec![
            (
                keys::SERVICE_NAME,
                AttrValue::Str(self.service_name.clone()),
            ),
            (keys::PROCESS_PID, AttrValue::Int(i64::from(self.pid))),
            (
                keys::PROCESS_EXECUTABLE_NAME,
                AttrValue::Str(self.executable_name.clone()),
            ),
        ];
        if let Some(path) = &self.executable_path {
            attrs.push((keys::PROCESS_EXECUTABLE_PATH, AttrValue::Str(path.clone())));
        }
        if let Some(line) = &self.command_line {
            attrs.push((keys::PROCESS_COMMAND_LINE, AttrValue::Str(line.clone())));
        }
        if let Some(host) = &self.host_name {
            attrs.push((keys::HOST_NAME, AttrValue::Str(host.clone())));
        }
        if let Some(id) = &self.container_id {
            attrs.push((keys::CONTAINER_ID, AttrValue::Str(id.clone())));
        }
        if let Some(pod) = &self.kubernetes {
            attrs.push((
                keys::SERVICE_NAMESPACE,
                AttrValue::Str(pod.namespace.clone()),
            ));
            attrs.extend(from_strings(pod.attributes()));
        }
        if let Some(project) = &self.openinference_project {
            let name = match project {
                ProjectName::ServiceName => self.service_name.clone(),
                ProjectName::Named(name) => name.to_string(),
            };
            attrs.push((openinference::keys::PROJECT_NAME, AttrValue::Str(name)));
        }
        attrs.push((keys::TELEMETRY_SDK_NAME, AttrValue::Str(SDK_NAME.into())));
        attrs.push((keys::TELEMETRY_SDK_LANGUAGE, AttrValue::Str("rust".into())));
        attrs.push((
            keys::TELEMETRY_SDK_VERSION,
            AttrValue::Str(env!("CARGO_PKG_VERSION").into()),
        ));
        attrs
    }

    /// The `OTEL_RESOURCE_ATTRIBUTES` entries to add to [`Self::attributes`]: those naming a
    /// key it does not already hold (what llmtap reads from the process wins).
    pub fn extra_attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        let own = self.attributes();
        self.configured_attributes
            .iter()
            .filter(move |(key, _)| !own.iter().any(|(k, _)| k == key))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// llmtap's own resource (its metrics): `service.name` as given (`OTEL_SERVICE_NAME`, ...),
/// `telemetry.sdk.*`, the host and node, then every `OTEL_RESOURCE_ATTRIBUTES` entry, which
/// overrides what llmtap detected, as the SDK's environment detector does.
pub fn agent_resource(
    service_name: String,
    host_name: Option<&str>,
    node_name: Option<&str>,
    configured: &[(String, String)],
) -> Vec<opentelemetry::KeyValue> {
    let mut attrs: Vec<(String, String)> = vec![
        (keys::TELEMETRY_SDK_NAME.into(), SDK_NAME.into()),
        (keys::TELEMETRY_SDK_LANGUAGE.into(), "rust".into()),
        (
            keys::TELEMETRY_SDK_VERSION.into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
    ];
    if let Some(host) = host_name {
        attrs.push((keys::HOST_NAME.into(), host.into()));
    }
    // Every call this agent sees was made on its node.
    if let Some(node) = node_name {
        attrs.push((crate::k8s::keys::NODE_NAME.into(), node.into()));
    }
    for (key, value) in configured {
        attrs.retain(|(k, _)| k != key);
        attrs.push((key.clone(), value.clone()));
    }
    attrs.retain(|(k, _)| k != keys::SERVICE_NAME);
    attrs.insert(0, (keys::SERVICE_NAME.into(), service_name));
    attrs
        .into_iter()
        .map(|(k, v)| opentelemetry::KeyValue::new(k, v))
        .collect()
}

/// Container id from the contents of `/proc/PID/cgroup`.
///
/// Handles cgroup v1 and v2 paths of Docker (`/docker/<id>`, `docker-<id>.scope`),
/// containerd/CRI (`/kubepods/…/<id>`, `cri-containerd-<id>.scope`), CRI-O (`crio-<id>.scope`)
/// and Podman (`libpod-<id>.scope`, `/libpod-<id>.scope/container`), and the systemd
/// `slice:prefix:id` form (`kubepods-…-pod<uid>.slice:cri-containerd:<id>`). Paths seen from
/// another cgroup namespace (`/../../…`) work the same. The innermost match wins.
pub fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    const PREFIXES: &[&str] = &[
        "docker-",
        "cri-containerd-",
        "crio-",
        "libpod-",
        "containerd-",
    ];
    let mut found = None;
    for line in cgroup.lines() {
        // hierarchy-ID:controller-list:cgroup-path
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        for segment in path.split(['/', ':']) {
            let segment = segment.strip_suffix(".scope").unwrap_or(segment);
            let candidate = PREFIXES
                .iter()
                .find_map(|p| segment.strip_prefix(p))
                .unwrap_or(segment);
            if candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit()) {
                found = Some(candidate.to_ascii_lowercase());
            }
        }
    }
    found
}

/// Reads process resources from a `/proc` tree, caching up to `capacity` pids.
#[derive(Debug)]
pub struct ProcessResources {
    proc_root: PathBuf,
    service_name_override: Option<String>,
    host_name: Option<String>,
    capacity: usize,
    cache: HashMap<u32, CachedProcess>,
    /// How long a cached pid is trusted without reading its start time again.
    recheck_after: Duration,
    kubernetes: Option<K8sMetadata>,
    /// Containerized processes whose pod was not known yet: pid → (pod UID from the cgroup,
    /// cache generation at the last lookup). Looked up again once the cache changed.
    pending_pods: HashMap<u32, (Option<String>, u64)>,
    insertion_order: VecDeque<u32>,
    /// Export `process.command_line` (opt-in: arguments can hold secrets no redaction knows).
    command_line: bool,
    /// `OTEL_RESOURCE_ATTRIBUTES`, without the keys naming llmtap itself.
    configured_attributes: Arc<[(String, String)]>,
    /// `openinference.project.name` of every resource (`--compat openinference`).
    openinference_project: Option<ProjectName>,
}

/// Default number of processes whose resources are kept.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// A cached pid's start time is read again (one `/proc/PID/stat`, a tenth of the daemon's work
/// per call when read for every call) at most this often, and at the next lookup after its
/// process exited. A pid is reused only after its process exited, which the kernel reports:
/// this bound covers an exit event the ring buffer lost.
const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct CachedProcess {
    /// Process start time in clock ticks: tells a reused pid.
    start_time: Option<u64>,
    resource: Arc<ProcessResource>,
    /// When the start time was last read; `None` once the process exited.
    checked_at: Option<Instant>,
}

impl ProcessResources {
    pub fn new(proc_root: impl Into<PathBuf>, service_name_override: Option<String>) -> Self {
        Self {
            proc_root: proc_root.into(),
            service_name_override,
            host_name: local_host_name(),
            capacity: DEFAULT_CACHE_CAPACITY,
            cache: HashMap::new(),
            recheck_after: DEFAULT_RECHECK_AFTER,
            insertion_order: VecDeque::new(),
            kubernetes: None,
            pending_pods: HashMap::new(),
            command_line: false,
            configured_attributes: Arc::from([]),
            openinference_project: None,
        }
    }

    /// Adds `openinference.project.name` to every resource.
    pub fn with_openinference_project(mut self, project: Option<ProjectName>) -> Self {
        self.openinference_project = project;
        self
    }

    /// Adds these `OTEL_RESOURCE_ATTRIBUTES` entries to every process's resource, except the
    /// keys naming a service's own identity (`service.name`, `service.version`,
    /// `service.instance.id`): those describe llmtap, not the traced processes.
    pub fn with_configured_attributes(mut self, attributes: &[(String, String)]) -> Self {
        self.configured_attributes = attributes
            .iter()
            .filter(|(k, _)| !AGENT_ONLY_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        self
    }

    /// Exports each process's command line (redacted) as `process.command_line`.
    pub fn with_command_line(mut self, export: bool) -> Self {
        self.command_line = export;
        self
    }

    /// Adds `k8s.*` attributes from this pod cache.
    pub fn with_kubernetes(mut self, kubernetes: Option<K8sMetadata>) -> Self {
        self.kubernetes = kubernetes;
        self
    }

    /// This machine's host name (`host.name`).
    pub fn host_name(&self) -> Option<&str> {
        self.host_name.as_deref()
    }

    #[cfg(test)]
    fn with_recheck_after(mut self, recheck_after: Duration) -> Self {
        self.recheck_after = recheck_after;
        self
    }

    #[cfg(test)]
    fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The resource of a process; read once per pid. A pid reused by a new process (another
    /// start time) is read again; an exited one keeps its cached resource.
    pub fn get(&mut self, process: &ProcessRef) -> Arc<ProcessResource> {
        if let Some(cached) = self.cache.get(&process.pid)
            && cached
                .checked_at
                .is_some_and(|at| at.elapsed() < self.recheck_after)
        {
            let cached = Arc::clone(&cached.resource);
            return self.fill_pending_pod(process.pid, cached);
        }
        let dir = self.proc_root.join(process.pid.to_string());
        let start_time = read_start_time(&dir);
        if let Some(cached) = self.cache.get_mut(&process.pid)
            && (start_time.is_none() || start_time == cached.start_time)
        {
            // A live process is trusted again for a while; an exited one is looked at again
            // next time (its pid may come back as another process).
            cached.checked_at = start_time.map(|_| Instant::now());
            let cached = Arc::clone(&cached.resource);
            return self.fill_pending_pod(process.pid, cached);
        }
        self.pending_pods.remove(&process.pid);
        let (resource, pod_uid) = self.read(process);
        if let Some(k8s) = &self.kubernetes
            && resource.kubernetes.is_none()
            && (resource.container_id.is_some() || pod_uid.is_some())
        {
            self.pending_pods
                .insert(process.pid, (pod_uid, k8s.generation()));
        }
        let resource = Arc::new(resource);
        let entry = CachedProcess {
            start_time,
            resource: Arc::clone(&resource),
            checked_at: start_time.map(|_| Instant::now()),
        };
        if self.cache.insert(process.pid, entry).is_none() {
            self.insertion_order.push_back(process.pid);
        }
        while self.cache.len() > self.capacity {
            match self.insertion_order.pop_front() {
                Some(oldest) => {
                    self.cache.remove(&oldest);
                    self.pending_pods.remove(&oldest);
                }
                None => break,
            }
        }
        resource
    }

    /// The process `pid` exited: its cached resource stays (its last calls may still be on
    /// their way), but the next lookup reads the pid's start time again.
    pub fn process_exited(&mut self, pid: u32) {
        if let Some(cached) = self.cache.get_mut(&pid) {
            cached.checked_at = None;
        }
    }

    /// A containerized process first seen before its pod reached the cache: look again when
    /// the cache has changed since, and keep the completed resource.
    fn fill_pending_pod(&mut self, pid: u32, cached: Arc<ProcessResource>) -> Arc<ProcessResource> {
        let (Some(k8s), Some((pod_uid, generation))) =
            (&self.kubernetes, self.pending_pods.get_mut(&pid))
        else {
            return cached;
        };
        let now = k8s.generation();
        if now == *generation {
            return cached;
        }
        *generation = now;
        let Some(pod) = k8s.lookup(cached.container_id.as_deref(), pod_uid.as_deref()) else {
            return cached;
        };
        self.pending_pods.remove(&pid);
        let service_name = self.service_name(&cached.executable_name, Some(&pod));
        let filled = Arc::new(ProcessResource {
            service_name,
            kubernetes: Some(pod),
            ..(*cached).clone()
        });
        if let Some(entry) = self.cache.get_mut(&pid) {
            entry.resource = Arc::clone(&filled);
        }
        filled
    }

    /// The resource, and the pod UID its cgroup names (for a later pod lookup).
    fn read(&self, process: &ProcessRef) -> (ProcessResource, Option<String>) {
        let dir = self.proc_root.join(process.pid.to_string());
        let executable_path = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            // A deleted binary reads as "/path (deleted)".
            .map(|p| p.trim_end_matches(" (deleted)").to_string());
        let command_line = if self.command_line {
            read_cmdline(&dir)
        } else {
            None
        };
        let executable_name = executable_path
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                if process.comm.is_empty() {
                    format!("pid-{}", process.pid)
                } else {
                    process.comm.clone()
                }
            });
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        let container_id = container_id_from_cgroup(&cgroup);
        let pod_uid = self
            .kubernetes
            .as_ref()
            .and_then(|_| crate::k8s::pod_uid_from_cgroup(&cgroup));
        let kubernetes = self
            .kubernetes
            .as_ref()
            .and_then(|k8s| k8s.lookup(container_id.as_deref(), pod_uid.as_deref()));
        let resource = ProcessResource {
            service_name: self.service_name(&executable_name, kubernetes.as_deref()),
            pid: process.pid,
            executable_name,
            executable_path,
            command_line,
            host_name: self.host_name.clone(),
            container_id,
            kubernetes,
            configured_attributes: Arc::clone(&self.configured_attributes),
            openinference_project: self.openinference_project.clone(),
        };
        (resource, pod_uid)
    }

    /// `--service-name`, else the Kubernetes workload, else the executable.
    fn service_name(&self, executable_name: &str, pod: Option<&PodAttributes>) -> String {
        self.service_name_override
            .clone()
            .or_else(|| pod.map(|p| workload_service_name(p).to_string()))
            .unwrap_or_else(|| executable_name.to_string())
    }
}

/// Field 22 of `/proc/PID/stat` (start time after boot, clock ticks).
fn read_start_time(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

fn read_cmdline(dir: &Path) -> Option<String> {
    let raw = std::fs::read(dir.join("cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| redact::redact_command_line(&args))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const ID: &str = "3f4b8c2a9e1d7f6b5a4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    #[test]
    fn container_ids_from_every_runtime_format() {
        let cases = [
            format!("12:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}"),
            format!("0::/system.slice/docker-{ID}.scope"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            ),
            format!("11:cpu:/kubepods/burstable/pod0a1b2c3d-aaaa-bbbb-cccc-0123456789ab/{ID}"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
            format!("0::/machine.slice/libpod-{ID}.scope/container"),
            format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            ),
        ];
        for case in &cases {
            assert_eq!(
                container_id_from_cgroup(case).as_deref(),
                Some(ID),
                "{case}"
            );
        }
    }

    #[test]
    fn no_container_id_on_the_host() {
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        assert_eq!(container_id_from_cgroup(""), None);
        let conmon = format!("0::/kubepods.slice/crio-conmon-{ID}.scope");
        assert_eq!(container_id_from_cgroup(&conmon), None);
    }

    /// A fake `/proc` with one process.
    pub(crate) fn fake_proc(
        tag: &str,
        pid: u32,
        args: &[&str],
        exe: Option<&str>,
        cgroup: &str,
    ) -> PathBuf {
        let root = std::env::temp_dir().join(format!("llmtap-proc-{tag}-{}", std::process::id()));
        let dir = root.join(pid.to_string());
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).ok();
        let mut cmdline = Vec::new();
        for arg in args {
            cmdline.extend_from_slice(arg.as_bytes());
            cmdline.push(0);
        }
        std::fs::write(dir.join("cmdline"), cmdline).ok();
        std::fs::write(dir.join("cgroup"), cgroup).ok();
        let stat = format!("{pid} (x y) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0");
        std::fs::write(dir.join("stat"), stat).ok();
        if let Some(exe) = exe {
            std::os::unix::fs::symlink(exe, dir.join("exe")).ok();
        }
        root
    }

    fn process(pid: u32, comm: &str) -> ProcessRef {
        ProcessRef {
            pid,
            tid: pid,
            comm: comm.into(),
        }
    }

    #[test]
    fn reads_and_redacts_a_process() {
        let root = fake_proc(
            "read",
            4242,
            &[
                "/usr/bin/python3.12",
                "agent.py",
                "--api-key",
                "sk-live-123",
            ],
            Some("/usr/bin/python3.12"),
            &format!("0::/system.slice/docker-{ID}.scope\n"),
        );
        let mut resources = ProcessResources::new(&root, None).with_command_line(true);
        let r = resources.get(&process(4242, "python3.12"));
        assert_eq!(r.executable_name, "python3.12");
        assert_eq!(r.service_name, "python3.12");
        assert_eq!(r.executable_path.as_deref(), Some("/usr/bin/python3.12"));
        assert_eq!(
            r.command_line.as_deref(),
            Some("/usr/bin/python3.12 agent.py --api-key [REDACTED]")
        );
        assert_eq!(r.container_id.as_deref(), Some(ID));
        let attrs = r.attributes();
        assert_eq!(
            super::super::attributes::find(&attrs, keys::TELEMETRY_SDK_NAME),
            Some(&AttrValue::Str("llmtap".into()))
        );
    }

    /// The command line can carry secrets no redaction recognises: it is exported only when
    /// asked for (`--export-command-line`).
    #[test]
    fn command_line_is_not_exported_by_default() {
        let root = fake_proc(
            "default-off",
            4343,
            &["/usr/bin/python3.12", "agent.py", "--db", "opaque"],
            Some("/usr/bin/python3.12"),
            "0::/\n",
        );
        let r = ProcessResources::new(&root, None).get(&process(4343, "python3.12"));
        assert_eq!(r.command_line, None);
        assert!(
            super::super::attributes::find(&r.attributes(), keys::PROCESS_COMMAND_LINE).is_none()
        );
        assert_eq!(r.executable_path.as_deref(), Some("/usr/bin/python3.12"));
    }

    #[test]
    fn exited_process_falls_back_to_comm_and_override_wins() {
        let root = std::env::temp_dir().join("llmtap-proc-none");
        let mut resources = ProcessResources::new(&root, Some("my-svc".into()));
        let r = resources.get(&process(99999, "node"));
        assert_eq!(r.executable_name, "node");
        assert_eq!(r.service_name, "my-svc");
        assert!(
            r.command_line.is_none() && r.executable_path.is_none() && r.container_id.is_none()
        );
    }

    /// `--compat openinference`: the Phoenix project is the one named, else the service.
    #[test]
    fn openinference_project_on_request() {
        let root = std::env::temp_dir().join("llmtap-proc-none");
        let project = |resources: &mut ProcessResources| {
            let r = resources.get(&process(99998, "node"));
            super::super::attributes::find(&r.attributes(), openinference::keys::PROJECT_NAME)
                .cloned()
        };
        assert_eq!(project(&mut ProcessResources::new(&root, None)), None);
        let mut by_service = ProcessResources::new(&root, Some("chatbot".into()))
            .with_openinference_project(Some(ProjectName::ServiceName));
        assert_eq!(
            project(&mut by_service),
            Some(AttrValue::Str("chatbot".into()))
        );
        let mut named = ProcessResources::new(&root, None)
            .with_openinference_project(Some(ProjectName::Named("llmtap-demo".into())));
        assert_eq!(
            project(&mut named),
            Some(AttrValue::Str("llmtap-demo".into()))
        );
    }

    #[test]
    fn cache_is_bounded_and_reused() {
        let root = std::env::temp_dir().join("llmtap-proc-none");
        let mut resources = ProcessResources::new(&root, None).with_capacity(2);
        let first = resources.get(&process(1, "a"));
        assert!(Arc::ptr_eq(&first, &resources.get(&process(1, "a"))));
        resources.get(&process(2, "b"));
        resources.get(&process(3, "c"));
        assert_eq!(resources.cache.len(), 2);
        assert!(!resources.cache.contains_key(&1));
        // An exited pid keeps its cached resource even if the record's comm differs.
        let same = resources.get(&process(3, "zzz"));
        assert_eq!(same.executable_name, "c");
    }

    #[test]
    fn reused_pid_is_read_again() {
        let root = fake_proc("reuse", 77, &["/bin/a"], Some("/bin/a"), "");
        let mut resources = ProcessResources::new(&root, None);
        assert_eq!(read_start_time(&root.join("77")), Some(777));
        assert_eq!(resources.get(&process(77, "a")).executable_name, "a");
        let dir = root.join("77");
        std::fs::write(
            dir.join("stat"),
            "77 (b) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0",
        )
        .ok();
        std::fs::remove_file(dir.join("exe")).ok();
        std::os::unix::fs::symlink("/bin/b", dir.join("exe")).ok();
        // Within the recheck interval the cached pid is trusted until its exit is reported.
        assert_eq!(resources.get(&process(77, "b")).executable_name, "a");
        resources.process_exited(77);
        assert_eq!(resources.get(&process(77, "b")).executable_name, "b");
    }

    /// An exit the daemon never heard of (lost with ring-buffer records) is made up for by
    /// reading the start time again once the recheck interval has passed.
    #[test]
    fn reused_pid_is_found_without_an_exit_notice_after_the_recheck_interval() {
        let root = fake_proc("reuse-unnoticed", 78, &["/bin/a"], Some("/bin/a"), "");
        let mut resources = ProcessResources::new(&root, None).with_recheck_after(Duration::ZERO);
        assert_eq!(resources.get(&process(78, "a")).executable_name, "a");
        let dir = root.join("78");
        std::fs::write(
            dir.join("stat"),
            "78 (b) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0",
        )
        .ok();
        std::fs::remove_file(dir.join("exe")).ok();
        std::os::unix::fs::symlink("/bin/b", dir.join("exe")).ok();
        assert_eq!(resources.get(&process(78, "b")).executable_name, "b");
    }

    /// `OTEL_RESOURCE_ATTRIBUTES` reaches every traced process's resource, but never renames
    /// it nor overrides what llmtap read from the process.
    #[test]
    fn configured_attributes_add_to_process_resources() {
        let root = fake_proc(
            "configured",
            4545,
            &["/usr/bin/node"],
            Some("/usr/bin/node"),
            "",
        );
        let configured = crate::export::otel_env::parse_key_value_list(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod,service.name=llmtap,service.version=9,\
             service.instance.id=x,process.pid=1,k8s.cluster.name=eu-1",
        );
        let r = ProcessResources::new(&root, None)
            .with_configured_attributes(&configured)
            .get(&process(4545, "node"));
        assert_eq!(r.service_name, "node");
        let extra: Vec<(&str, &str)> = r.extra_attributes().collect();
        assert_eq!(
            extra,
            [
                ("deployment.environment.name", "prod"),
                ("k8s.cluster.name", "eu-1")
            ]
        );
        assert_eq!(
            super::super::attributes::find(&r.attributes(), keys::PROCESS_PID),
            Some(&AttrValue::Int(4545))
        );
    }

    /// llmtap's own resource: the variable's entries override what llmtap detected, and the
    /// given service name wins over the variable's `service.name`.
    #[test]
    fn agent_resource_takes_the_configured_attributes() {
        let configured = vec![
            ("service.name".to_string(), "ignored".to_string()),
            ("host.name".to_string(), "node-a".to_string()),
            ("team".to_string(), "ml".to_string()),
        ];
        let kv = agent_resource("llmtap".into(), Some("vm"), Some("node-1"), &configured);
        let get = |key: &str| {
            kv.iter()
                .find(|k| k.key.as_str() == key)
                .map(|k| k.value.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("llmtap"));
        assert_eq!(get("host.name").as_deref(), Some("node-a"));
        assert_eq!(get("team").as_deref(), Some("ml"));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-1"));
        assert_eq!(get("telemetry.sdk.name").as_deref(), Some("llmtap"));
        assert_eq!(
            kv.iter()
                .filter(|k| k.key.as_str() == "service.name")
                .count(),
            1
        );
    }

    /// Kubernetes attribution across the two readers of a process's cgroup: the pod UID
    /// (k8s) and the container id (here).
    mod kubernetes {
        /// The semantic conventions' order: Deployment, ReplicaSet, StatefulSet, DaemonSet,
        /// CronJob, Job, else the pod.
        #[test]
        fn workload_names_the_service() {
            let pod = |workload: Workload| PodAttributes {
                namespace: "ns".into(),
                pod_name: "pod-0".into(),
                pod_uid: UID.into(),
                container_name: None,
                node_name: None,
                workload,
            };
            let name = |w: Workload| workload_service_name(&pod(w)).to_string();
            assert_eq!(name(Workload::default()), "pod-0");
            assert_eq!(
                name(Workload {
                    deployment: Some("web".into()),
                    replicaset: Some("web-7d9f".into()),
                    ..Workload::default()
                }),
                "web"
            );
            assert_eq!(
                name(Workload {
                    replicaset: Some("bare-rs".into()),
                    ..Workload::default()
                }),
                "bare-rs"
            );
            assert_eq!(
                name(Workload {
                    job: Some("nightly-29000000".into()),
                    cronjob: Some("nightly".into()),
                    ..Workload::default()
                }),
                "nightly"
            );
            assert_eq!(
                name(Workload {
                    daemonset: Some("log-agent".into()),
                    ..Workload::default()
                }),
                "log-agent"
            );
        }

        use std::sync::Arc;

        use super::*;
        use crate::k8s::{PodAttributes, PodSnapshot, Workload, pod_uid_from_cgroup};

        const UID: &str = "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab";

        #[test]
        fn pod_uid_from_every_kubelet_cgroup_layout() {
            let id = "3f4b8c2a9e1d7f6b5a4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
            let underscored = UID.replace('-', "_");
            let cases = [
                // cgroup v1, cgroupfs driver (containerd, docker via cri-dockerd)
                format!(
                    "11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{id}\n1:name=systemd:/kubepods/burstable/pod{UID}/{id}"
                ),
                // cgroup v2, systemd driver (containerd)
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{id}.scope"
                ),
                // guaranteed QoS has no QoS slice
                format!("0::/kubepods.slice/kubepods-pod{underscored}.slice/crio-{id}.scope"),
                // seen from llmtap's own cgroup namespace
                format!(
                    "0::/../../kubepods-besteffort-pod{underscored}.slice/cri-containerd-{id}.scope"
                ),
                // systemd "slice:prefix:name" form
                format!(
                    "0::/system.slice/containerd.service/kubepods-burstable-pod{underscored}.slice:cri-containerd:{id}"
                ),
            ];
            for case in &cases {
                assert_eq!(pod_uid_from_cgroup(case).as_deref(), Some(UID), "{case}");
                assert_eq!(
                    container_id_from_cgroup(case).as_deref(),
                    Some(id),
                    "{case}"
                );
            }
            for none in [
                "0::/system.slice/docker-abc.scope",
                "0::/user.slice/user-1000.slice/session-2.scope",
                "0::/kubepods.slice/kubepods-podnot-a-uid.slice",
                "",
            ] {
                assert_eq!(pod_uid_from_cgroup(none), None, "{none}");
            }
        }

        /// A process first seen before its pod reached the cache gets the pod's attributes on a
        /// later lookup, once the cache changed.
        #[test]
        fn resource_is_completed_when_the_pod_arrives() {
            let id = "aa".repeat(32);
            let cgroup = format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope\n",
                UID.replace('-', "_")
            );
            let root = fake_proc(
                "k8s-late",
                515,
                &["/usr/bin/python3", "agent.py"],
                Some("/usr/bin/python3"),
                &cgroup,
            );
            let k8s = K8sMetadata::new("node-1");
            let mut resources =
                ProcessResources::new(&root, None).with_kubernetes(Some(k8s.clone()));
            let process = ProcessRef {
                pid: 515,
                tid: 515,
                comm: "python3".into(),
            };
            let first = resources.get(&process);
            assert_eq!(first.container_id.as_deref(), Some(id.as_str()));
            assert!(first.kubernetes.is_none());
            assert_eq!(first.service_name, "python3");
            k8s.update(|store| {
                store.apply(PodSnapshot {
                    uid: UID.into(),
                    name: "agent-0".into(),
                    namespace: "ai".into(),
                    node_name: Some("node-1".into()),
                    containers: vec![(id.clone(), "agent".into())],
                    workload: Workload {
                        statefulset: Some("agent".into()),
                        ..Workload::default()
                    },
                })
            });
            let second = resources.get(&process);
            let pod = second.kubernetes.as_ref().expect("filled on the next call");
            assert_eq!(pod.pod_name, "agent-0");
            assert_eq!(pod.container_name.as_deref(), Some("agent"));
            assert_eq!(pod.workload.statefulset.as_deref(), Some("agent"));
            // The traced workload names the service, and its namespace the service namespace.
            assert_eq!(second.service_name, "agent");
            assert_eq!(
                super::super::super::attributes::find(
                    &second.attributes(),
                    keys::SERVICE_NAMESPACE
                ),
                Some(&AttrValue::Str("ai".into()))
            );
            // Cached from now on.
            assert!(Arc::ptr_eq(&second, &resources.get(&process)));
        }
    }
}
