//! What the cookbook tests share: test tasks, a node (service + pool), bounded waits.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher::{task, Broker, InProcessPool, PgBroker, Service, ServiceHandle, TaskRegistry};
use dispatcher_examples::cookbook;
use dispatcher_testkit::postgres::PgFixture;

/// A job body: works `ms` milliseconds and returns `n * 10`.
#[task(name = "cookbook_test.work")]
pub fn work(n: i64, ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    n * 10
}

/// A periodic body.
#[task(name = "cookbook_test.tick")]
pub fn tick(node: String) -> String {
    node
}

/// A fresh database with the cookbook's tables.
pub async fn database() -> PgFixture {
    let fx = PgFixture::new().await.expect("a PostgreSQL server");
    let mut client = fx.client().await.unwrap();
    cookbook::setup(&mut client).await.unwrap();
    fx
}

/// One node's service: an in-process pool of `threads`, and a PostgreSQL broker.
pub struct Node {
    pub id: String,
    pub broker: Arc<dyn Broker>,
    pub service: Arc<ServiceHandle>,
}

impl Node {
    pub async fn start(fx: &PgFixture, id: &str, threads: usize) -> Node {
        let broker: Arc<dyn Broker> = Arc::new(PgBroker::connect(&fx.url()).await.unwrap());
        let service = Service::builder()
            .registry(TaskRegistry::new().register::<work>().register::<tick>())
            .broker(broker.clone())
            .channels([format!("cookbook_test_{id}").replace('-', "_")])
            .node_id(id)
            .pool(InProcessPool::new(threads))
            .start()
            .await
            .unwrap();
        Node {
            id: id.to_owned(),
            broker,
            service: Arc::new(service),
        }
    }

    pub async fn stop(&self) {
        self.service
            .shutdown_with_grace(Some(Duration::from_secs(5)))
            .await
            .unwrap();
    }
}

/// Polls `check` every 50 ms until it gives `Some`, or panics after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
