//! Kubernetes attribution: which pod, container and workload a traced process belongs to.
//!
//! A process's cgroup names its container (`container.id`, read by
//! the exporter's process resource) and, under the kubelet, its pod UID. When llmtap runs in a
//! cluster, a watch on the API server (pods scheduled on this node, `spec.nodeName=NODE`)
//! fills a [`K8sMetadata`] cache keyed by container id and pod UID; the exporter consults it
//! when it builds a process's resource. Lookups never wait on the network: a process whose
//! pod is not known yet is looked up again once the watch has delivered something new.

mod store;
mod watch;

use std::sync::{Arc, RwLock};

use crate::host::local_host_name;
pub use store::{PodSnapshot, PodStore};

/// `k8s.*` resource attributes of a pod, in the order they are emitted; every value is a
/// string (the exporters turn them into their own attribute values).
pub type PodLabels = Vec<(&'static str, String)>;

/// Resource attribute keys (OpenTelemetry semantic conventions, `k8s.*`).
pub mod keys {
    pub const POD_NAME: &str = "k8s.pod.name";
    pub const POD_UID: &str = "k8s.pod.uid";
    pub const NAMESPACE_NAME: &str = "k8s.namespace.name";
    pub const CONTAINER_NAME: &str = "k8s.container.name";
    pub const NODE_NAME: &str = "k8s.node.name";
    pub const DEPLOYMENT_NAME: &str = "k8s.deployment.name";
    pub const REPLICASET_NAME: &str = "k8s.replicaset.name";
    pub const STATEFULSET_NAME: &str = "k8s.statefulset.name";
    pub const DAEMONSET_NAME: &str = "k8s.daemonset.name";
    pub const JOB_NAME: &str = "k8s.job.name";
    pub const CRONJOB_NAME: &str = "k8s.cronjob.name";
}

/// `--kubernetes`: when to read pod metadata from the API server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KubernetesMode {
    /// When running in a cluster (KUBERNETES_SERVICE_HOST is set): in-cluster config.
    #[default]
    Auto,
    /// Always: in-cluster config, else the kubeconfig (KUBECONFIG, ~/.kube/config); fail
    /// when neither works.
    On,
    /// Never.
    Off,
}

/// Kubernetes options of `llmtap run`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesArgs {
    /// Add pod, container and workload attributes (k8s.*) from the API server:
    /// auto (when in a cluster), on, off.
    #[arg(long = "kubernetes", value_enum, value_name = "MODE", env = "LLMTAP_KUBERNETES", default_value_t = KubernetesMode::Auto)]
    pub mode: KubernetesMode,

    /// Node whose pods are watched (set it from the downward API: spec.nodeName). Default:
    /// this machine's host name.
    #[arg(long = "node-name", value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// Owning workload of a pod, resolved through its controller references
/// (ReplicaSet → Deployment, Job → CronJob).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub deployment: Option<String>,
    pub replicaset: Option<String>,
    pub statefulset: Option<String>,
    pub daemonset: Option<String>,
    pub job: Option<String>,
    pub cronjob: Option<String>,
}

impl Workload {
    fn push_labels(&self, labels: &mut PodLabels) {
        let fields = [
            (keys::DEPLOYMENT_NAME, &self.deployment),
            (keys::REPLICASET_NAME, &self.replicaset),
            (keys::STATEFULSET_NAME, &self.statefulset),
            (keys::DAEMONSET_NAME, &self.daemonset),
            (keys::JOB_NAME, &self.job),
            (keys::CRONJOB_NAME, &self.cronjob),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                labels.push((key, v.clone()));
            }
        }
    }
}

/// The Kubernetes identity of one container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAttributes {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// Unknown when only the pod (from the cgroup's pod UID) matched.
    pub container_name: Option<String>,
    pub node_name: Option<String>,
    pub workload: Workload,
}

impl PodAttributes {
    /// Resource attributes (spans).
    pub fn attributes(&self) -> PodLabels {
        let mut labels: PodLabels = vec![
            (keys::POD_NAME, self.pod_name.clone()),
            (keys::POD_UID, self.pod_uid.clone()),
            (keys::NAMESPACE_NAME, self.namespace.clone()),
        ];
        if let Some(c) = &self.container_name {
            labels.push((keys::CONTAINER_NAME, c.clone()));
        }
        if let Some(n) = &self.node_name {
            labels.push((keys::NODE_NAME, n.clone()));
        }
        self.workload.push_labels(&mut labels);
        labels
    }

    /// The calling workload on metric data points: namespace, container and workload names,
    /// but not pod name or UID, which change with every rollout and would grow the number of
    /// time series without bound.
    pub fn metric_attributes(&self) -> PodLabels {
        let mut labels: PodLabels = vec![(keys::NAMESPACE_NAME, self.namespace.clone())];
        if let Some(c) = &self.container_name {
            labels.push((keys::CONTAINER_NAME, c.clone()));
        }
        self.workload.push_labels(&mut labels);
        labels
    }
}

/// Errors starting the Kubernetes metadata watch.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Config(String),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Pod metadata of this node, filled by a background watch; cheap to clone and to query.
#[derive(Clone, Debug)]
pub struct K8sMetadata {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: RwLock<PodStore>,
    node_name: String,
    /// The watch task; aborted when the last handle is dropped.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl K8sMetadata {
    /// A cache with no watch behind it (tests, or filled by hand).
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: RwLock::new(PodStore::default()),
                node_name: node_name.into(),
                task: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Starts per `args`: `None` when Kubernetes is off, or `auto` outside a cluster (or with
    /// an unusable in-cluster config, which is logged). Must be called inside a tokio runtime.
    pub async fn start(args: &KubernetesArgs) -> Result<Option<Self>, K8sError> {
        let config = match args.mode {
            KubernetesMode::Off => return Ok(None),
            KubernetesMode::Auto => {
                if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                    log::debug!("not in a Kubernetes cluster: no k8s.* attributes");
                    return Ok(None);
                }
                match kube::Config::incluster() {
                    Ok(config) => config,
                    Err(e) => {
                        log::warn!(
                            "KUBERNETES_SERVICE_HOST is set but the in-cluster config is unusable ({e}): no k8s.* attributes"
                        );
                        return Ok(None);
                    }
                }
            }
            KubernetesMode::On => kube::Config::infer()
                .await
                .map_err(|e| K8sError::Config(e.to_string()))?,
        };
        let node_name = match &args.node_name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => {
                let host = local_host_name().unwrap_or_default();
                log::warn!(
                    "NODE_NAME (--node-name) is not set: watching the pods of node {host:?} (this host's name); set NODE_NAME from spec.nodeName"
                );
                host
            }
        };
        Self::watch(config, node_name).map(Some)
    }

    /// Watches the pods of `node_name` through the API server `config` points at.
    pub fn watch(config: kube::Config, node_name: String) -> Result<Self, K8sError> {
        // kube's rustls connector uses the process-wide crypto provider: ring, as OTLP does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_from(config)?;
        let metadata = Self::new(node_name.clone());
        log::info!("Kubernetes: watching the pods of node {node_name} for k8s.* attributes");
        let task = tokio::spawn(watch::run(client, node_name, metadata.clone()));
        if let Ok(mut slot) = metadata.inner.task.lock() {
            *slot = Some(task);
        }
        Ok(metadata)
    }

    /// The node whose pods are watched (`k8s.node.name` of llmtap's own metrics).
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The pod of a container: by container id first, else by the pod UID from the cgroup
    /// (then without a container name).
    pub fn lookup(
        &self,
        container_id: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<Arc<PodAttributes>> {
        let store = self.inner.store.read().unwrap_or_else(|e| e.into_inner());
        store.lookup(container_id, pod_uid)
    }

    /// Changes with every update of the cache: a lookup that missed is worth retrying only
    /// once this moved.
    pub fn generation(&self) -> u64 {
        let store = self.inner.store.read().unwrap_or_else(|e| e.into_inner());
        store.generation()
    }

    /// Runs `f` on the cache with the write lock held (the watch, tests).
    pub fn update<R>(&self, f: impl FnOnce(&mut PodStore) -> R) -> R {
        let mut store = self.inner.store.write().unwrap_or_else(|e| e.into_inner());
        f(&mut store)
    }
}

/// Pod UID from the contents of `/proc/PID/cgroup`: the kubelet's pod cgroup,
/// `…/pod<uid>/…` (cgroupfs driver) or `…/kubepods-<qos>-pod<uid_with_underscores>.slice/…`
/// (systemd driver).
pub fn pod_uid_from_cgroup(cgroup: &str) -> Option<String> {
    let mut found = None;
    for line in cgroup.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        for segment in path.split(['/', ':']) {
            let segment = segment.strip_suffix(".slice").unwrap_or(segment);
            // The last "pod" in e.g. "kubepods-burstable-pod<uid>".
            let Some(at) = segment.rfind("pod") else {
                continue;
            };
            let candidate = segment[at + 3..].replace('_', "-");
            if is_uuid(&candidate) {
                found = Some(candidate.to_ascii_lowercase());
            }
        }
    }
    found
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Container id from a container status `containerID` (`containerd://<id>`, `cri-o://<id>`,
/// `docker://<id>`): the id alone, lower case, as the cgroup path spells it.
pub fn container_id_from_status(status_id: &str) -> Option<String> {
    let id = status_id
        .split_once("://")
        .map_or(status_id, |(_, id)| id)
        .trim();
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
