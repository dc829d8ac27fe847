//! Throughput of the post-capture pipeline on recorded streams (bytes of captured plaintext
//! per second), with realistic read sizes and with small reads.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmtap::capture::StreamEvent;
use llmtap::testing::{ReplayOptions, cassette_dir, cassette_events, load_all};
use llmtap::{Pipeline, PipelineConfig};

fn events_for(read_size: usize) -> (Vec<Vec<StreamEvent>>, u64) {
    let cassettes = load_all(&cassette_dir()).unwrap_or_default();
    let opts = ReplayOptions {
        read_size,
        ..ReplayOptions::default()
    };
    let all: Vec<Vec<StreamEvent>> = cassettes
        .iter()
        .map(|c| cassette_events(c, &opts))
        .collect();
    let bytes = all
        .iter()
        .flatten()
        .map(|e| match e {
            StreamEvent::Data(d) => d.data.len() as u64,
            _ => 0,
        })
        .sum();
    (all, bytes)
}

fn bench_pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    for (label, read_size, capture_content) in [
        ("all_cassettes_4k_reads", 4096, false),
        ("all_cassettes_64b_reads", 64, false),
        ("all_cassettes_4k_reads_content", 4096, true),
    ] {
        let (exchanges, bytes) = events_for(read_size);
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(label, |b| {
            b.iter(|| {
                let mut p = Pipeline::new(PipelineConfig {
                    capture_content,
                    ..PipelineConfig::default()
                });
                let mut out = Vec::new();
                for events in &exchanges {
                    for ev in events.iter().cloned() {
                        p.push(ev, &mut out);
                    }
                }
                p.finish(&mut out);
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(300));
    targets = bench_pipeline
}
criterion_main!(benches);
