//! Health: liveness is the process, readiness is the service (API.md "Health"). A Redis
//! outage longer than the Helm chart's liveness budget (3 failed probes x 10 s) never makes
//! the overall service `""` NOT_SERVING, so Kubernetes never restarts a pod for it; the
//! service `presence.v1.PresenceService` goes NOT_SERVING and comes back.

mod common;

use std::time::{Duration, Instant};

use common::node_process::NodeProcess;
use common::redis::RedisServer;
use common::{eventually, patience};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The chart's liveness budget: `failureThreshold` x `periodSeconds` (values.yaml).
const LIVENESS_BUDGET: Duration = Duration::from_secs(30);
const SERVICE: &str = "presence.v1.PresenceService";

async fn check(url: &str, service: &str) -> Option<ServingStatus> {
    let ask = async {
        let channel = presence_node::client::connect(url).await.ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    };
    tokio::time::timeout(patience(), ask).await.ok().flatten()
}

#[tokio::test]
async fn a_redis_outage_longer_than_the_liveness_budget_never_fails_liveness() {
    let mut redis = RedisServer::start();
    let node = NodeProcess::start(&[
        "--redis-url",
        &redis.url(),
        "--key-prefix",
        "health-outage",
        "--node-id",
        "health-a",
    ])
    .await;
    let url = node.url.clone();
    eventually("ready", || async {
        (check(&url, SERVICE).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    assert_eq!(check(&url, "").await, Some(ServingStatus::Serving));

    redis.kill();
    let outage_began = Instant::now();
    let mut readiness_went_down = false;
    let mut liveness_checks = 0;
    while outage_began.elapsed() < LIVENESS_BUDGET + Duration::from_secs(2) {
        assert_eq!(
            check(&url, "").await,
            Some(ServingStatus::Serving),
            "liveness failed {:?} into a Redis outage",
            outage_began.elapsed()
        );
        liveness_checks += 1;
        readiness_went_down |= check(&url, SERVICE).await == Some(ServingStatus::NotServing);
        // The probe period, scaled down: many checks across the whole outage.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        liveness_checks > 50,
        "only {liveness_checks} liveness checks"
    );
    assert!(readiness_went_down, "readiness never showed the outage");

    redis.restart_empty();
    eventually("ready again after Redis returns", || async {
        (check(&url, SERVICE).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    assert_eq!(check(&url, "").await, Some(ServingStatus::Serving));
}
