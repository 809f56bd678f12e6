//! Frame encode/decode: the protobuf work of one `PresenceUpdate` frame carrying 256
//! presences (the most the node batches into one frame), and of a single-user update.
//! `cargo bench --bench frames`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use presence_node::proto::{server_frame, Presence, PresenceUpdate, ServerFrame, Status};
use prost::Message;

fn presence(i: usize) -> Presence {
    Presence {
        user_id: format!("user-{i:06}"),
        status: if i % 3 == 0 {
            Status::Offline as i32
        } else {
            Status::Online as i32
        },
        status_text: if i % 3 == 0 {
            String::new()
        } else {
            format!("t=1795933735821{i:03};s={i}")
        },
        devices: if i % 3 == 0 {
            Vec::new()
        } else {
            vec!["ios".into(), "web".into()]
        },
        since_ms: 1_795_933_735_000 + i as u64,
        last_seen_ms: if i % 3 == 0 { 1_795_933_700_000 } else { 0 },
        version: 1_795_933_735_821_000 + i as u64,
    }
}

fn update(n: usize) -> ServerFrame {
    ServerFrame {
        kind: Some(server_frame::Kind::Update(PresenceUpdate {
            presences: (0..n).map(presence).collect(),
            denied_user_ids: Vec::new(),
        })),
    }
}

fn frames(c: &mut Criterion) {
    for n in [1usize, 256] {
        let frame = update(n);
        let bytes = frame.encode_to_vec();
        let mut g = c.benchmark_group(format!("update_{n}_presences"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("encode", |b| {
            let mut buf = Vec::with_capacity(bytes.len());
            b.iter(|| {
                buf.clear();
                black_box(&frame).encode(&mut buf).unwrap();
                black_box(buf.len())
            })
        });
        g.bench_function("encoded_len", |b| {
            b.iter(|| black_box(&frame).encoded_len())
        });
        g.bench_function("decode", |b| {
            b.iter(|| ServerFrame::decode(black_box(bytes.as_slice())).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, frames);
criterion_main!(benches);
