use super::*;

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
        format!("0::/../../kubepods-besteffort-pod{underscored}.slice/cri-containerd-{id}.scope"),
        // systemd "slice:prefix:name" form
        format!(
            "0::/system.slice/containerd.service/kubepods-burstable-pod{underscored}.slice:cri-containerd:{id}"
        ),
    ];
    for case in &cases {
        assert_eq!(pod_uid_from_cgroup(case).as_deref(), Some(UID), "{case}");
        assert_eq!(
            crate::export::resource::container_id_from_cgroup(case).as_deref(),
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

#[test]
fn container_ids_from_statuses() {
    assert_eq!(
        container_id_from_status("containerd://ABCdef").as_deref(),
        Some("abcdef")
    );
    assert_eq!(
        container_id_from_status("cri-o://1234").as_deref(),
        Some("1234")
    );
    assert_eq!(
        container_id_from_status("docker://99").as_deref(),
        Some("99")
    );
    assert_eq!(container_id_from_status("containerd://"), None);
}

fn web_pod() -> PodAttributes {
    PodAttributes {
        namespace: "shop".into(),
        pod_name: "web-7d9f8-abcde".into(),
        pod_uid: UID.into(),
        container_name: Some("app".into()),
        node_name: Some("node-1".into()),
        workload: Workload {
            deployment: Some("web".into()),
            replicaset: Some("web-7d9f8".into()),
            ..Workload::default()
        },
    }
}

#[test]
fn resource_and_metric_attributes() {
    let pod = web_pod();
    let attrs = pod.attributes();
    let keys_of = |a: &Attributes| a.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    assert_eq!(
        keys_of(&attrs),
        [
            keys::POD_NAME,
            keys::POD_UID,
            keys::NAMESPACE_NAME,
            keys::CONTAINER_NAME,
            keys::NODE_NAME,
            keys::DEPLOYMENT_NAME,
            keys::REPLICASET_NAME
        ]
    );
    assert_eq!(
        crate::export::attributes::find(&attrs, keys::DEPLOYMENT_NAME),
        Some(&AttrValue::Str("web".into()))
    );
    // No per-pod values on metrics.
    assert_eq!(
        keys_of(&pod.metric_attributes()),
        [
            keys::NAMESPACE_NAME,
            keys::CONTAINER_NAME,
            keys::DEPLOYMENT_NAME,
            keys::REPLICASET_NAME
        ]
    );
}

#[test]
fn flags_parse() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        k8s: KubernetesArgs,
    }
    let cli =
        Cli::try_parse_from(["llmtap", "--kubernetes", "on", "--node-name", "n1"]).expect("flags");
    assert_eq!(cli.k8s.mode, KubernetesMode::On);
    assert_eq!(cli.k8s.node_name.as_deref(), Some("n1"));
    assert!(Cli::try_parse_from(["llmtap", "--kubernetes", "maybe"]).is_err());
}

#[tokio::test]
async fn off_and_auto_outside_a_cluster_start_nothing() {
    let off = KubernetesArgs {
        mode: KubernetesMode::Off,
        node_name: None,
    };
    assert!(K8sMetadata::start(&off).await.expect("off").is_none());
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        let auto = KubernetesArgs::default();
        assert!(K8sMetadata::start(&auto).await.expect("auto").is_none());
    }
}

/// A process first seen before its pod reached the cache gets the pod's attributes on a
/// later lookup, once the cache changed.
#[test]
fn resource_is_completed_when_the_pod_arrives() {
    use crate::export::resource::ProcessResources;
    use crate::genai::ProcessRef;
    let id = "aa".repeat(32);
    let cgroup = format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope\n",
        UID.replace('-', "_")
    );
    let root = crate::export::resource::tests::fake_proc(
        "k8s-late",
        515,
        &["/usr/bin/python3", "agent.py"],
        Some("/usr/bin/python3"),
        &cgroup,
    );
    let k8s = K8sMetadata::new("node-1");
    let mut resources = ProcessResources::new(&root, None).with_kubernetes(Some(k8s.clone()));
    let process = ProcessRef {
        pid: 515,
        tid: 515,
        comm: "python3".into(),
    };
    let first = resources.get(&process);
    assert_eq!(first.container_id.as_deref(), Some(id.as_str()));
    assert!(first.kubernetes.is_none());
    k8s.update(|store| {
        store.apply(store::PodSnapshot {
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
    // Cached from now on.
    assert!(Arc::ptr_eq(&second, &resources.get(&process)));
}
