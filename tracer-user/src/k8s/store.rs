//! The pod cache: container id → pod attributes, pod UID → pod attributes. Pure data, filled
//! by the watch (`watch.rs`), read by the exporter.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{PodAttributes, Workload};

/// Pods kept at most (a node runs a few hundred at most; this bounds memory against a
/// misbehaving API server or field selector).
pub const MAX_PODS: usize = 8192;

/// How long a deleted pod's metadata stays: a call that completes after its pod was deleted
/// (a finished Job, a pod shutting down) still gets its attributes.
pub const DELETED_POD_RETENTION: Duration = Duration::from_secs(120);

/// One pod as the watch saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSnapshot {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node_name: Option<String>,
    /// (container id as in the cgroup, container name), for init, regular and ephemeral
    /// containers that have started.
    pub containers: Vec<(String, String)>,
    pub workload: Workload,
}

#[derive(Debug)]
struct PodEntry {
    pod: Arc<PodAttributes>,
    container_ids: Vec<String>,
    deleted_at: Option<Instant>,
}

/// Pods of this node by UID and by container id.
#[derive(Debug, Default)]
pub struct PodStore {
    pods: HashMap<String, PodEntry>,
    by_container: HashMap<String, Arc<PodAttributes>>,
    generation: u64,
    /// Pods not stored because the cache was full.
    rejected: u64,
}

impl PodStore {
    /// Adds or replaces a pod.
    pub fn apply(&mut self, snapshot: PodSnapshot) {
        self.apply_at(snapshot, Instant::now());
    }

    fn apply_at(&mut self, snapshot: PodSnapshot, now: Instant) {
        if snapshot.uid.is_empty() {
            return;
        }
        self.expire(now);
        if !self.pods.contains_key(&snapshot.uid) && self.pods.len() >= MAX_PODS {
            self.rejected += 1;
            if self.rejected.is_power_of_two() {
                log::warn!(
                    "Kubernetes pod cache full ({MAX_PODS} pods): {} pods without k8s.* attributes",
                    self.rejected
                );
            }
            return;
        }
        self.remove_containers(&snapshot.uid);
        let pod = Arc::new(PodAttributes {
            namespace: snapshot.namespace,
            pod_name: snapshot.name,
            pod_uid: snapshot.uid.clone(),
            container_name: None,
            node_name: snapshot.node_name,
            workload: snapshot.workload,
        });
        let mut container_ids = Vec::with_capacity(snapshot.containers.len());
        for (id, name) in snapshot.containers {
            let attrs = PodAttributes {
                container_name: Some(name),
                ..(*pod).clone()
            };
            self.by_container.insert(id.clone(), Arc::new(attrs));
            container_ids.push(id);
        }
        self.pods.insert(
            snapshot.uid,
            PodEntry {
                pod,
                container_ids,
                deleted_at: None,
            },
        );
        self.generation += 1;
    }

    /// A pod was deleted: kept for [`DELETED_POD_RETENTION`], then forgotten.
    pub fn delete(&mut self, uid: &str) {
        self.delete_at(uid, Instant::now());
    }

    fn delete_at(&mut self, uid: &str, now: Instant) {
        if let Some(entry) = self.pods.get_mut(uid)
            && entry.deleted_at.is_none()
        {
            entry.deleted_at = Some(now);
            self.generation += 1;
        }
        self.expire(now);
    }

    /// After a full re-list: pods not in `listed` were deleted while the watch was down.
    pub fn retain_listed(&mut self, listed: &HashSet<String>) {
        let now = Instant::now();
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !listed.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.delete_at(&uid, now);
        }
    }

    pub fn lookup(
        &self,
        container_id: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<Arc<PodAttributes>> {
        if let Some(found) = container_id.and_then(|id| self.by_container.get(id)) {
            return Some(Arc::clone(found));
        }
        pod_uid
            .and_then(|uid| self.pods.get(uid))
            .map(|entry| Arc::clone(&entry.pod))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Pods stored (deleted ones still retained included).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Pods not deleted.
    pub fn live_len(&self) -> usize {
        self.pods
            .values()
            .filter(|e| e.deleted_at.is_none())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn remove_containers(&mut self, uid: &str) {
        if let Some(entry) = self.pods.get(uid) {
            for id in &entry.container_ids {
                self.by_container.remove(id);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| {
                e.deleted_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= DELETED_POD_RETENTION)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in expired {
            self.remove_containers(&uid);
            self.pods.remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, containers: &[(&str, &str)]) -> PodSnapshot {
        PodSnapshot {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: "ns".into(),
            node_name: Some("node-1".into()),
            containers: containers
                .iter()
                .map(|(id, n)| (id.to_string(), n.to_string()))
                .collect(),
            workload: Workload::default(),
        }
    }

    #[test]
    fn lookup_by_container_then_pod_uid() {
        let mut store = PodStore::default();
        store.apply(pod("u1", &[("c1", "app"), ("c2", "sidecar")]));
        let found = store.lookup(Some("c2"), None).expect("by container");
        assert_eq!(found.container_name.as_deref(), Some("sidecar"));
        assert_eq!(found.pod_name, "pod-u1");
        let by_uid = store.lookup(Some("unknown"), Some("u1")).expect("by uid");
        assert_eq!(by_uid.container_name, None);
        assert!(store.lookup(Some("unknown"), Some("u2")).is_none());
        assert!(store.lookup(None, None).is_none());
    }

    #[test]
    fn replacing_a_pod_drops_its_old_containers() {
        let mut store = PodStore::default();
        store.apply(pod("u1", &[("old", "app")]));
        let g = store.generation();
        store.apply(pod("u1", &[("new", "app")]));
        assert!(store.generation() > g);
        assert!(store.lookup(Some("old"), None).is_none());
        assert!(store.lookup(Some("new"), None).is_some());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn deleted_pods_are_retained_for_a_while_then_forgotten() {
        let mut store = PodStore::default();
        let t0 = Instant::now();
        store.apply_at(pod("u1", &[("c1", "app")]), t0);
        store.delete_at("u1", t0);
        assert!(store.lookup(Some("c1"), None).is_some(), "still retained");
        store.apply_at(pod("u2", &[]), t0 + DELETED_POD_RETENTION);
        assert!(store.lookup(Some("c1"), None).is_none());
        assert!(store.lookup(None, Some("u1")).is_none());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn relist_marks_missing_pods_deleted() {
        let mut store = PodStore::default();
        store.apply(pod("u1", &[]));
        store.apply(pod("u2", &[]));
        let g = store.generation();
        store.retain_listed(&HashSet::from(["u2".to_string()]));
        assert!(store.generation() > g);
        assert!(store.pods["u1"].deleted_at.is_some());
        assert!(store.pods["u2"].deleted_at.is_none());
    }

    #[test]
    fn bounded() {
        let mut store = PodStore::default();
        for i in 0..MAX_PODS + 10 {
            store.apply(pod(&format!("u{i}"), &[]));
        }
        assert_eq!(store.len(), MAX_PODS);
        assert_eq!(store.rejected, 10);
        // An existing pod is still updated when the cache is full.
        store.apply(pod("u0", &[("c", "app")]));
        assert!(store.lookup(Some("c"), None).is_some());
    }
}
