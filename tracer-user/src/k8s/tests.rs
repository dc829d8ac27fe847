use super::*;

const UID: &str = "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab";

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
    let keys_of = |a: &PodLabels| a.iter().map(|(k, _)| *k).collect::<Vec<_>>();
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
        attrs.iter().find(|(k, _)| *k == keys::DEPLOYMENT_NAME),
        Some(&(keys::DEPLOYMENT_NAME, "web".to_string()))
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
