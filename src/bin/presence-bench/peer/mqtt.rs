//! The MQTT side: one `rumqttc` client (one TCP connection) per user, the classic presence
//! pattern. User u's status is the retained topic `presence/u` (QoS 1), its last will is
//! `offline` on the same topic (retained, QoS 1), and it subscribes (QoS 1) to the topics of
//! the users it follows. QoS 1 because a presence app wants each change delivered while the
//! connection is up and the sender to know the broker has it (the node acknowledges every
//! `SetStatus` too); clean sessions, keepalive 30 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Outgoing, Packet, QoS,
    SubscribeFilter,
};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::workload::{user_index, Tally};
use super::Fleet;
use crate::common::{unix_us, Progress};

const STATUSES: [&str; 3] = ["online", "away", "busy"];

fn topic(user: usize) -> String {
    format!("presence/u{user}")
}

struct Client {
    client: AsyncClient,
    task: JoinHandle<()>,
}

pub struct MqttFleet {
    clients: Vec<Option<Client>>,
    closing: Arc<AtomicBool>,
}

impl MqttFleet {
    /// Connects a client per user of `tally.graph` to the broker on `port`, each published
    /// its retained status and subscribed (SUBACK received); `concurrency` at once.
    pub async fn open(port: u16, tally: Arc<Tally>, concurrency: usize) -> Result<Self, String> {
        let closing = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let n = tally.graph.len();
        let mut opening = Vec::with_capacity(n);
        for i in 0..n {
            let permit = gate.clone().acquire_owned().await.expect("semaphore");
            let (tally, closing) = (tally.clone(), closing.clone());
            opening.push(tokio::spawn(async move {
                let opened = open_client(i, port, tally, closing).await;
                drop(permit);
                opened
            }));
        }
        let mut clients = Vec::with_capacity(n);
        let mut progress = Progress::new(Duration::from_secs(2));
        for (i, task) in opening.into_iter().enumerate() {
            let client = task
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("mqtt client {i}: {e}"))?;
            clients.push(Some(client));
            progress.tick(|| format!("mqtt: {} clients connected", i + 1));
        }
        Ok(Self { clients, closing })
    }
}

async fn open_client(
    i: usize,
    port: u16,
    tally: Arc<Tally>,
    closing: Arc<AtomicBool>,
) -> Result<Client, String> {
    let mut options = MqttOptions::new(format!("bench-{i}"), "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_last_will(LastWill::new(topic(i), "offline", QoS::AtLeastOnce, true));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(10);
    eventloop.set_network_options(network);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(run_loop(i, eventloop, tally.clone(), closing, ready_tx));
    let filters: Vec<SubscribeFilter> = tally.graph[i]
        .iter()
        .map(|u| SubscribeFilter::new(topic(*u as usize), QoS::AtLeastOnce))
        .collect();
    let setup = async {
        client
            .publish(topic(i), QoS::AtLeastOnce, true, "online")
            .await
            .map_err(|e| e.to_string())?;
        client
            .subscribe_many(filters)
            .await
            .map_err(|e| e.to_string())?;
        ready_rx
            .await
            .map_err(|_| "connection failed before SUBACK".to_string())
    };
    match tokio::time::timeout(Duration::from_secs(30), setup).await {
        Ok(Ok(())) => Ok(Client { client, task }),
        Ok(Err(e)) => {
            task.abort();
            Err(e)
        }
        Err(_) => {
            task.abort();
            Err("no SUBACK within 30 s".into())
        }
    }
}

/// Drives one client's connection: records every change received, reports the SUBACK.
async fn run_loop(
    i: usize,
    mut eventloop: EventLoop,
    tally: Arc<Tally>,
    closing: Arc<AtomicBool>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now = unix_us();
                let user = p.topic.strip_prefix("presence/").and_then(user_index);
                if let (Some(user), Ok(text)) = (user, std::str::from_utf8(&p.payload)) {
                    tally.received(i, user, text, now);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                tally.acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(_) => {
                // rumqttc would reconnect on the next poll; a benchmark client does not.
                if !closing.load(Ordering::Relaxed) {
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

impl Fleet for MqttFleet {
    async fn change(&mut self, user: usize, status: usize, text: String) -> Result<(), String> {
        let client = self.clients[user].as_ref().ok_or("client closed")?;
        let payload = format!("{};{text}", STATUSES[status % STATUSES.len()]);
        client
            .client
            .publish(topic(user), QoS::AtLeastOnce, true, payload)
            .await
            .map_err(|e| e.to_string())
    }

    async fn tick(&mut self) {
        // rumqttc sends the keepalive PINGREQs itself.
    }

    async fn close(&mut self, from: usize, to: usize) {
        self.closing.store(true, Ordering::Relaxed);
        let mut closing = Vec::new();
        let to = to.min(self.clients.len());
        for slot in &mut self.clients[from..to] {
            if let Some(c) = slot.take() {
                // A clean DISCONNECT: the broker drops the will, as for a user signing off.
                let _ = c.client.try_disconnect();
                closing.push(c.task);
            }
        }
        super::join_by(closing, Duration::from_secs(10)).await;
        self.closing.store(false, Ordering::Relaxed);
    }
}
