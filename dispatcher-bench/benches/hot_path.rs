//! Micro-benchmarks of the service's per-message work: decoding payloads, splitting and joining
//! chunked payloads, binding arguments, and what a Call costs to create and report.
//!
//! ```sh
//! cargo bench -p dispatcher-bench --bench hot_path
//! ```
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dispatcher_core::args::bind_arguments;
use dispatcher_core::call::SharedStr;
use dispatcher_core::chunk::{split, Assembler, AssemblerLimits};
use dispatcher_core::message::{decode, Decoded};
use dispatcher_core::{Call, Outcome};
use serde_json::{json, Map, Value};

const NOOP: &str = r#"{"task":"bench.noop"}"#;
const FULL: &str = r#"{"task": "demo.echo", "uuid": "9760671a-0e4f-4b4e-9d8e-3f2c1a7b5d60", "args": [4, "four", [1, 2]], "kwargs": {"label": "x", "n": 2.5}, "time_pub": 1727354869.5126922, "guid": "8f88"}"#;
const CONTROL: &str = r#"{"control": "running", "control_data": {"task": "demo.echo"}, "reply_to": "reply_to_0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"}"#;

fn decoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, payload) in [
        ("noop", NOOP),
        ("bare_name", "bench.noop"),
        ("full_task", FULL),
        ("control", CONTROL),
    ] {
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_function(name, |b| b.iter(|| decode(black_box(payload)).unwrap()));
    }
    let piece = split(&"x".repeat(20_000), 8000).unwrap().remove(0);
    g.throughput(Throughput::Bytes(piece.len() as u64));
    g.bench_function("chunk_envelope", |b| {
        b.iter(|| decode(black_box(&piece)).unwrap())
    });
    g.finish();
}

fn chunks(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk");
    for size in [20_000usize, 1_000_000] {
        let payload = format!(
            r#"{{"task":"demo.echo","args":["{}"]}}"#,
            "é-payload ".repeat(size / 11)
        );
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_function(format!("split_{size}"), |b| {
            b.iter(|| split(black_box(&payload), 8000).unwrap())
        });
        let pieces: Vec<_> = split(&payload, 8000)
            .unwrap()
            .into_iter()
            .map(|p| match decode(&p).unwrap().0 {
                Decoded::Chunk(env) => env,
                other => panic!("not a chunk: {other:?}"),
            })
            .collect();
        g.bench_function(format!("join_{size}"), |b| {
            b.iter_batched(
                || pieces.clone(),
                |pieces| {
                    let mut asm = Assembler::new(AssemblerLimits::default());
                    let now = Instant::now();
                    let mut whole = None;
                    for env in pieces {
                        whole = asm.push(env, now).unwrap();
                    }
                    whole.unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn binding(c: &mut Criterion) {
    let mut g = c.benchmark_group("bind");
    let params = ["a", "b", "label"];
    g.bench_function("none", |b| {
        b.iter(|| bind_arguments("t", black_box(&[]), Vec::new(), Map::new()).unwrap())
    });
    g.bench_function("positional_3", |b| {
        b.iter_batched(
            || vec![json!(1), json!("two"), json!([3])],
            |args| bind_arguments("t", &params, args, Map::new()).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("mixed_1_2", |b| {
        b.iter_batched(
            || {
                let kwargs: Map<String, Value> = [
                    ("b".to_owned(), json!("two")),
                    ("label".to_owned(), json!("x")),
                ]
                .into_iter()
                .collect();
                (vec![json!(1)], kwargs)
            },
            |(args, kwargs)| bind_arguments("t", &params, args, kwargs).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn calls(c: &mut Criterion) {
    let mut g = c.benchmark_group("call");
    let node = SharedStr::from("node-1234");
    let channel = SharedStr::from("dispatcher");
    g.bench_function("received_and_finished", |b| {
        b.iter(|| {
            let mut call = Call::received(
                "9760671a-0e4f-4b4e-9d8e-3f2c1a7b5d60".to_owned(),
                "bench.noop".to_owned(),
                node.clone(),
                channel.clone(),
            );
            call.started_at = call.received_at;
            call.finish(Outcome::Ok, None, 1.0e9);
            call
        })
    });
    let mut call = Call::received(
        "9760671a-0e4f-4b4e-9d8e-3f2c1a7b5d60".to_owned(),
        "bench.noop".to_owned(),
        node.clone(),
        channel.clone(),
    );
    call.started_at = call.received_at;
    call.finish(Outcome::Ok, None, 1.0e9);
    g.bench_function("to_json", |b| {
        b.iter(|| serde_json::to_string(black_box(&call)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, decoding, chunks, binding, calls);
criterion_main!(benches);
