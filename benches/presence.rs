//! Presence aggregation: a user's record turned into the views watchers see, and the record
//! changes every session open, status change and session end go through.
//! `cargo bench --bench presence`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use presence_node::presence::{SessionEntry, UserRecord};
use presence_node::proto::Status;
use presence_node::session::outbox::ViewPair;
use std::hint::black_box;

const NOW: u64 = 1_795_933_735_000;

fn entry(i: usize, device: &str) -> SessionEntry {
    SessionEntry {
        session_id: format!("node-a:{i}"),
        device: device.into(),
        node_id: "node-a".into(),
        connected_at_ms: NOW,
        linger_until_ms: None,
    }
}

/// A user online on `devices` devices, with a status text.
fn record(devices: usize) -> UserRecord {
    let mut r = UserRecord::new("alice");
    for (i, device) in ["ios", "web", "desktop", "android"]
        .iter()
        .cycle()
        .take(devices)
        .enumerate()
    {
        r.open_session(entry(i, device), None, 16, NOW + i as u64)
            .unwrap();
    }
    r.set_status(Status::Busy, "in a meeting until 3pm".into(), NOW + 10);
    r
}

fn views(c: &mut Criterion) {
    let mut g = c.benchmark_group("view");
    for devices in [1, 3] {
        let r = record(devices);
        g.bench_function(format!("public_{devices}_devices"), |b| {
            b.iter(|| black_box(&r).view(false))
        });
        g.bench_function(format!("owner_{devices}_devices"), |b| {
            b.iter(|| black_box(&r).view(true))
        });
        // What the registry computes once per change before fanning out.
        g.bench_function(format!("view_pair_{devices}_devices"), |b| {
            b.iter(|| {
                let r = black_box(&r);
                ViewPair::new(r.view(false), r.view(true))
            })
        });
    }
    let offline = UserRecord::new("bob");
    g.bench_function("public_offline", |b| {
        b.iter(|| black_box(&offline).view(false))
    });
    g.finish();
}

fn changes(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.bench_function("open_session_first", |b| {
        b.iter_batched(
            || UserRecord::new("alice"),
            |mut r| {
                r.open_session(entry(1, "ios"), None, 16, NOW).unwrap();
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("open_session_replacing_lingering", |b| {
        b.iter_batched(
            || {
                let mut r = record(3);
                r.end_session("node-a:0", Some(NOW + 3_000), NOW + 20);
                r
            },
            |mut r| {
                r.open_session(entry(9, "ios"), None, 16, NOW + 30).unwrap();
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("set_status", |b| {
        let mut r = record(2);
        let mut n = 0u64;
        let texts = ["t=1;s=1", "t=2;s=2"];
        b.iter(|| {
            n += 1;
            let status = if n % 2 == 0 {
                Status::Away
            } else {
                Status::Online
            };
            r.set_status(status, texts[(n % 2) as usize].into(), NOW + n)
        })
    });
    g.bench_function("end_session_lingering", |b| {
        b.iter_batched(
            || record(2),
            |mut r| {
                r.end_session("node-a:1", Some(NOW + 3_000), NOW + 20);
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, views, changes);
criterion_main!(benches);
