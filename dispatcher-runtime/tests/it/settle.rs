//! Durable deliveries: the service settles every delivery exactly once, the way its Call ended
//! (complete, retry with the task's backoff, fail, cancel, or release at shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dispatcher_core::broker::{Broker, BrokerError, Incoming, Subscription};
use dispatcher_core::delivery::{Delivery, Settle, Settlement};
use dispatcher_testkit::TestService;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::{registry, WAIT};

/// A broker that hands out every payload with a delivery on `attempt` (set per payload with a
/// leading `N|`), and records settlements.
struct Durable {
    tx: mpsc::UnboundedSender<Incoming>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Incoming>>>,
    log: Arc<Log>,
    next: Mutex<u64>,
}

#[derive(Default)]
struct Log(Mutex<HashMap<u64, Vec<Settlement>>>);

impl Settle for Log {
    fn settle(&self, id: u64, settlement: Settlement) {
        self.0
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push(settlement);
    }
}

impl Durable {
    fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Durable {
            tx,
            rx: Mutex::new(Some(rx)),
            log: Arc::default(),
            next: Mutex::new(0),
        })
    }

    /// Hands out `payload` as attempt `attempt`; returns the delivery id.
    fn deliver(&self, payload: &str, attempt: u32) -> u64 {
        let id = {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            *n
        };
        let d = Delivery::new(id, attempt, self.log.clone());
        self.tx
            .send(Incoming::new("durable", payload).with_delivery(d))
            .unwrap();
        id
    }

    async fn settled(&self, id: u64) -> Settlement {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.log.0.lock().unwrap().get(&id) {
                assert_eq!(s.len(), 1, "delivery {id} settled once: {s:?}");
                return s[0].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "delivery {id} never settled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl Broker for Durable {
    async fn publish(&self, _channel: &str, payload: &str) -> Result<(), BrokerError> {
        self.deliver(payload, 1);
        Ok(())
    }

    async fn subscribe(&self, _channels: &[String]) -> Result<Subscription, BrokerError> {
        let rx = self.rx.lock().unwrap().take().ok_or(BrokerError::Closed)?;
        Ok(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        )
        .boxed())
    }
}

async fn service(b: &Arc<Durable>, workers: usize) -> TestService {
    TestService::builder()
        .registry(registry())
        .pool(dispatcher_runtime::InProcessPool::new(workers))
        .broker(b.clone())
        .channel("durable")
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_way_a_call_ends_is_settled_once() {
    let b = Durable::new();
    let svc = service(&b, 2).await;
    let ok = b.deliver(r#"{"task": "t.double", "args": [2]}"#, 1);
    let failing = b.deliver(r#"{"task": "t.fail", "args": ["no"]}"#, 1);
    let last = b.deliver(r#"{"task": "t.fail", "args": ["no"]}"#, 3);
    let panics = b.deliver(r#"{"task": "t.boom"}"#, 2);
    let unknown = b.deliver(r#"{"task": "t.nope"}"#, 1);
    let bad_args = b.deliver(r#"{"task": "t.double", "args": ["x"]}"#, 1);
    let garbage = b.deliver("not json", 1);
    let control = b.deliver(r#"{"control": "alive"}"#, 1);
    // Lost twice before (lease expired), a task allowing 3 attempts: not run again.
    let exhausted = b.deliver(r#"{"task": "t.double", "args": [1]}"#, 4);

    assert_eq!(b.settled(ok).await, Settlement::Complete);
    match b.settled(failing).await {
        Settlement::Retry { after, error } => {
            // Default backoff 1 s for attempt 1, jitter 0.75–1.25.
            assert!(
                after >= Duration::from_millis(750) && after <= Duration::from_millis(1250),
                "{after:?}"
            );
            assert!(error.contains("no"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(b.settled(last).await, Settlement::Fail { error } if error.contains("no")));
    match b.settled(panics).await {
        Settlement::Retry { after, .. } => {
            assert!(
                after >= Duration::from_millis(1500) && after <= Duration::from_millis(2500),
                "{after:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(b.settled(unknown).await, Settlement::Fail { error } if error.contains("t.nope"))
    );
    assert!(matches!(b.settled(bad_args).await, Settlement::Fail { .. }));
    assert!(matches!(b.settled(garbage).await, Settlement::Fail { .. }));
    assert_eq!(b.settled(control).await, Settlement::Complete);
    assert!(
        matches!(b.settled(exhausted).await, Settlement::Fail { error } if error.contains("max_attempts"))
    );
    let history = svc.history();
    let ran = history
        .iter()
        .filter(|c| c.task == "t.double" && c.outcome == Some(dispatcher_core::Outcome::Ok))
        .count();
    assert_eq!(ran, 1, "the exhausted job did not run");
    assert!(history
        .iter()
        .filter(|c| c.task == "t.fail")
        .all(|c| c.attempt.is_some()));
    svc.shutdown().await;
}

#[tokio::test]
async fn duplicates_discarded_complete_and_shutdown_releases_what_had_not_started() {
    let b = Durable::new();
    let svc = service(&b, 1).await;
    let first = b.deliver(r#"{"task": "t.exclusive", "args": [0.3]}"#, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dup = b.deliver(r#"{"task": "t.exclusive", "args": [0.3]}"#, 1);
    assert_eq!(
        b.settled(dup).await,
        Settlement::Complete,
        "discarded: done"
    );
    assert_eq!(b.settled(first).await, Settlement::Complete);
    // One worker busy for a while, two waiting: at shutdown those two go back untouched.
    let running = b.deliver(r#"{"task": "t.nap", "args": [0.3]}"#, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting: Vec<u64> = (0..2)
        .map(|_| b.deliver(r#"{"task": "t.nap", "args": [0.1]}"#, 2))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    svc.shutdown().await;
    assert_eq!(b.settled(running).await, Settlement::Complete);
    for id in waiting {
        assert_eq!(b.settled(id).await, Settlement::Release);
    }
}
