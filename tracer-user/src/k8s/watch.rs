//! The background watch: pods of one node (list, then watch, re-listing after a gap), each
//! turned into a [`PodSnapshot`] with its owning workload resolved, into the cache.

use std::collections::{HashMap, HashSet};

use futures::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    batch::v1::Job,
    core::v1::{ContainerStatus, Pod},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};

use super::{K8sMetadata, Workload, container_id_from_status, store::PodSnapshot};

/// Owner lookups kept (ReplicaSet → Deployment, Job → CronJob); cleared when full.
const OWNER_CACHE_MAX: usize = 4096;

pub(super) async fn run(client: Client, node_name: String, metadata: K8sMetadata) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut events = watcher(pods, config).default_backoff().boxed();
    let mut owners = OwnerResolver::new(client);
    let mut listed: HashSet<String> = HashSet::new();
    let mut errors: u64 = 0;
    let mut synced = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                let snapshot = owners.snapshot(&pod).await;
                listed.insert(snapshot.uid.clone());
                metadata.update(|store| store.apply(snapshot));
            }
            Ok(watcher::Event::InitDone) => {
                metadata.update(|store| store.retain_listed(&listed));
                if !synced {
                    synced = true;
                    log::info!("Kubernetes: {} pods on node {node_name}", listed.len());
                }
                listed.clear();
            }
            Ok(watcher::Event::Apply(pod)) => {
                let snapshot = owners.snapshot(&pod).await;
                metadata.update(|store| store.apply(snapshot));
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    metadata.update(|store| store.delete(uid));
                }
            }
            Err(e) => {
                // The watcher retries with backoff; say so without flooding the log.
                errors += 1;
                if errors.is_power_of_two() {
                    log::warn!(
                        "Kubernetes pod watch failed ({errors} errors so far, retrying): {e}"
                    );
                }
            }
        }
    }
}

/// The containers of a pod that have an id (started at least once), with their names.
fn started_containers(pod: &Pod) -> Vec<(String, String)> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let lists: [&Option<Vec<ContainerStatus>>; 3] = [
        &status.init_container_statuses,
        &status.container_statuses,
        &status.ephemeral_container_statuses,
    ];
    lists
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|c| {
            let id = container_id_from_status(c.container_id.as_deref()?)?;
            Some((id, c.name.clone()))
        })
        .collect()
}

fn controller(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    let owners = owners?;
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
}

/// Resolves second-level owners through the API server, caching the answers.
struct OwnerResolver {
    client: Client,
    /// (kind, namespace, name) → owner name (None: it has no such owner).
    cache: HashMap<(&'static str, String, String), Option<String>>,
    failures: u64,
}

impl OwnerResolver {
    fn new(client: Client) -> Self {
        Self {
            client,
            cache: HashMap::new(),
            failures: 0,
        }
    }

    async fn snapshot(&mut self, pod: &Pod) -> PodSnapshot {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let mut workload = Workload::default();
        if let Some(owner) = controller(meta.owner_references.as_ref()) {
            let name = owner.name.clone();
            match owner.kind.as_str() {
                "ReplicaSet" => {
                    workload.deployment = self.owner_of_replicaset(&namespace, &name, pod).await;
                    workload.replicaset = Some(name);
                }
                "StatefulSet" => workload.statefulset = Some(name),
                "DaemonSet" => workload.daemonset = Some(name),
                "Job" => {
                    workload.cronjob = self.owner_of_job(&namespace, &name).await;
                    workload.job = Some(name);
                }
                _ => {}
            }
        }
        PodSnapshot {
            uid: meta.uid.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            namespace,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            containers: started_containers(pod),
            workload,
        }
    }

    async fn owner_of_replicaset(
        &mut self,
        namespace: &str,
        name: &str,
        pod: &Pod,
    ) -> Option<String> {
        let key = ("ReplicaSet", namespace.to_string(), name.to_string());
        if let Some(cached) = self.cache.get(&key) {
            return cached.clone();
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let owner = match api.get_opt(name).await {
            Ok(Some(rs)) => controller(rs.metadata.owner_references.as_ref())
                .filter(|o| o.kind == "Deployment")
                .map(|o| o.name.clone()),
            Ok(None) => None,
            Err(e) => {
                self.note_failure("replicasets", &e);
                // Without access, the Deployment's naming scheme (<deployment>-<pod-template-hash>)
                // still names it; not cached, so access granted later is used.
                return deployment_from_template_hash(name, pod);
            }
        };
        self.remember(key, owner.clone());
        owner
    }

    async fn owner_of_job(&mut self, namespace: &str, name: &str) -> Option<String> {
        let key = ("Job", namespace.to_string(), name.to_string());
        if let Some(cached) = self.cache.get(&key) {
            return cached.clone();
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let owner = match api.get_opt(name).await {
            Ok(Some(job)) => controller(job.metadata.owner_references.as_ref())
                .filter(|o| o.kind == "CronJob")
                .map(|o| o.name.clone()),
            Ok(None) => None,
            Err(e) => {
                self.note_failure("jobs", &e);
                return None;
            }
        };
        self.remember(key, owner.clone());
        owner
    }

    fn remember(&mut self, key: (&'static str, String, String), owner: Option<String>) {
        if self.cache.len() >= OWNER_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, owner);
    }

    fn note_failure(&mut self, resource: &str, error: &kube::Error) {
        self.failures += 1;
        if self.failures.is_power_of_two() {
            log::warn!(
                "Kubernetes: cannot read {resource} to find owning workloads ({} failures; is get on {resource} allowed?): {error}",
                self.failures
            );
        }
    }
}

/// `<deployment>-<hash>` when the ReplicaSet's name ends with the pod's `pod-template-hash`.
fn deployment_from_template_hash(replicaset: &str, pod: &Pod) -> Option<String> {
    let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
    let deployment = replicaset.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!deployment.is_empty()).then(|| deployment.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod JSON")
    }

    #[test]
    fn started_containers_of_every_kind() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "status": {
                "initContainerStatuses": [{"name": "init", "containerID": "containerd://AA11",
                    "image": "i", "imageID": "", "ready": false, "restartCount": 0}],
                "containerStatuses": [
                    {"name": "app", "containerID": "cri-o://bb22", "image": "i", "imageID": "",
                     "ready": true, "restartCount": 0},
                    {"name": "waiting", "image": "i", "imageID": "", "ready": false, "restartCount": 0}
                ]
            }
        }));
        assert_eq!(
            started_containers(&p),
            [
                ("aa11".to_string(), "init".to_string()),
                ("bb22".to_string(), "app".to_string())
            ]
        );
    }

    #[test]
    fn deployment_name_from_the_template_hash() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-7d9f8-abcde", "labels": {"pod-template-hash": "7d9f8"}}
        }));
        assert_eq!(
            deployment_from_template_hash("web-7d9f8", &p).as_deref(),
            Some("web")
        );
        assert_eq!(deployment_from_template_hash("other-123", &p), None);
    }
}
