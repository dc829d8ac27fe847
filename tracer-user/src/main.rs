fn main() {
    let bytes = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llmtap-tracer"));
    let ebpf = aya::Ebpf::load(bytes);
    eprintln!(
        "{:?}",
        ebpf.map(|e| e.programs().map(|(n, _)| n.to_string()).collect::<Vec<_>>())
    );
}
