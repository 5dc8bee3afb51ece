//! A pool that queues jobs behind a worker's running one (`Dispatched::queued`): such a Call has
//! not started until the pool says so (`PoolEvent::Started`), in the `running` command's reply
//! and in the history.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent, PoolEvents};
use dispatcher_core::{Outcome, WorkerStatus};
use dispatcher_runtime::{Service, ServiceHandle};
use serde_json::{json, Map, Value};

use crate::tasks::*;
use crate::WAIT;

/// One worker (id 1, pid 4242): the first job runs, every later one is queued behind it. Jobs
/// start and end only when the test says.
#[derive(Debug, Default)]
struct OneWorker {
    /// The service's event channel, shared with the test.
    events: Arc<Mutex<Option<PoolEvents>>>,
    keys: Arc<Mutex<Vec<CallKey>>>,
}

#[async_trait]
impl Pool for OneWorker {
    async fn start(&mut self, events: PoolEvents) -> dispatcher_core::Result<()> {
        *self.events.lock().unwrap() = Some(events);
        Ok(())
    }
    fn try_dispatch(&mut self, job: Job) -> Result<Dispatched, Job> {
        let mut keys = self.keys.lock().unwrap();
        keys.push(job.key);
        Ok(if keys.len() == 1 {
            Dispatched::running(1, 4242)
        } else {
            Dispatched::queued(1, 4242)
        })
    }
    fn cancel(&mut self, _key: CallKey) -> bool {
        false
    }
    fn workers(&self) -> Vec<WorkerStatus> {
        Vec::new()
    }
    async fn shutdown(&mut self, _grace: Duration) {}
}

async fn running(h: &ServiceHandle) -> Map<String, Value> {
    let mut reply = h.control("running", Map::new()).await.unwrap();
    let map = reply.as_object_mut().unwrap();
    map.remove("node_id");
    map.clone()
}

/// Waits until `running` holds `n` Calls.
async fn running_n(h: &ServiceHandle, n: usize) -> Map<String, Value> {
    let t = Instant::now();
    loop {
        let r = running(h).await;
        if r.len() == n {
            return r;
        }
        assert!(t.elapsed() < WAIT, "running never held {n} Calls: {r:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_call_queued_behind_a_running_one_has_not_started() {
    let pool = OneWorker::default();
    let (keys, events) = (pool.keys.clone(), pool.events.clone());
    let h = Service::builder()
        .registry(crate::registry())
        .pool(pool)
        .start()
        .await
        .unwrap();
    let events = events
        .lock()
        .unwrap()
        .clone()
        .expect("the service started its pool");
    let first = h.submit(double::call(1)).await.unwrap();
    let second = h.submit(double::call(2)).await.unwrap();

    let r = running_n(&h, 2).await;
    assert_eq!(r["worker-1"]["uuid"], json!(first), "{r:?}");
    assert!(r["worker-1"]["started_at"].is_number(), "{r:?}");
    assert_eq!(r["queued-0"]["uuid"], json!(second), "{r:?}");
    assert!(r["queued-0"]["started_at"].is_null(), "{r:?}");
    assert!(r["queued-0"]["run_s"].is_null(), "{r:?}");

    let (k1, k2) = {
        let k = keys.lock().unwrap();
        (k[0], k[1])
    };
    let started = dispatcher_core::call::now_epoch();
    events.send(finished(k1, 2)).await.unwrap();
    events
        .send(PoolEvent::Started {
            key: k2,
            worker_id: 1,
            pid: 4242,
            at: started,
        })
        .await
        .unwrap();
    let r = running_n(&h, 1).await;
    assert_eq!(r["worker-1"]["uuid"], json!(second), "{r:?}");
    assert_eq!(r["worker-1"]["started_at"], json!(started), "{r:?}");

    events.send(finished(k2, 4)).await.unwrap();
    h.wait_for_finished(2, WAIT).await.unwrap();
    let calls = h.history(&Default::default());
    let second_call = calls.iter().find(|c| c.uuid == second).unwrap();
    assert_eq!(second_call.started_at, Some(started));
    assert_eq!(second_call.outcome, Some(Outcome::Ok));
    h.shutdown().await.unwrap();
}

fn finished(key: CallKey, result: i64) -> PoolEvent {
    PoolEvent::Finished {
        key,
        outcome: Outcome::Ok,
        result: Some(json!(result)),
        error: None,
        at: dispatcher_core::call::now_epoch(),
    }
}
