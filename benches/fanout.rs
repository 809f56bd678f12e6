//! Registry fan-out: one changed record offered to 10,000 local watchers.
//!
//! The registry's state is private; what it does per change is public: compute the
//! `ViewPair` once, then `Outbox::offer` it to every watching session's outbox (a map of
//! session key -> outbox, as `RegistryState` holds). The outboxes are set up the way the
//! session actor does it: `begin_watch` then `complete_snapshot`.
//! `cargo bench --bench fanout`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::{FutureExt, StreamExt};
use presence_node::presence::{SessionEntry, UserRecord};
use presence_node::proto::Status;
use presence_node::session::outbox::{Outbox, OutboxStream, ViewPair};

const WATCHERS: usize = 10_000;
const NOW: u64 = 1_795_933_735_000;

/// 10,000 outboxes watching "alice" (and 19 other users each, as in the churn benchmark),
/// keyed like the registry's map.
fn watchers() -> HashMap<u64, Arc<Outbox>> {
    let alice = UserRecord::new("alice");
    (0..WATCHERS as u64)
        .map(|key| {
            let outbox = Outbox::new(format!("w{key}"), 256);
            let mut ids: Vec<String> = (0..19).map(|i| format!("u{}", (key + i) % 5000)).collect();
            ids.push("alice".into());
            outbox.begin_watch(&ids);
            let snapshot = ids
                .iter()
                .map(|id| {
                    let mut view = alice.view(false);
                    view.user_id = id.clone();
                    view
                })
                .collect();
            outbox.complete_snapshot(1, snapshot, Vec::new()).unwrap();
            // The device read its snapshot.
            let mut stream = OutboxStream::new(outbox.clone());
            while let Some(Some(_)) = stream.next().now_or_never() {}
            (key, outbox)
        })
        .collect()
}

fn alice_record() -> UserRecord {
    let mut r = UserRecord::new("alice");
    r.open_session(
        SessionEntry {
            session_id: "node-a:1".into(),
            device: "ios".into(),
            node_id: "node-a".into(),
            connected_at_ms: NOW,
            linger_until_ms: None,
        },
        None,
        16,
        NOW,
    )
    .unwrap();
    r
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(WATCHERS as u64));
    g.sample_size(30);

    // Watchers that do not read: each offer replaces the pending update (coalescing).
    let outboxes = watchers();
    let mut record = alice_record();
    let mut n = 0u64;
    g.bench_function("offer_to_10000_watchers_coalescing", |b| {
        b.iter(|| {
            n += 1;
            record.set_status(Status::Online, format!("s={n}"), NOW + n);
            let pair = ViewPair::new(record.view(false), record.view(true));
            for outbox in outboxes.values() {
                outbox.offer(black_box(&pair));
            }
        })
    });

    // Watchers that read: each offer queues an update that the transport then takes
    // (one `PresenceUpdate` frame per watcher), as with fast devices.
    let outboxes = watchers();
    let streams: Vec<OutboxStream> = outboxes
        .values()
        .map(|o| OutboxStream::new(o.clone()))
        .collect();
    let mut streams = streams;
    let mut record = alice_record();
    g.bench_function("offer_and_take_frame_10000_watchers", |b| {
        b.iter(|| {
            n += 1;
            record.set_status(Status::Online, format!("s={n}"), NOW + n);
            let pair = ViewPair::new(record.view(false), record.view(true));
            for outbox in outboxes.values() {
                outbox.offer(black_box(&pair));
            }
            for stream in streams.iter_mut() {
                black_box(stream.next().now_or_never());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
