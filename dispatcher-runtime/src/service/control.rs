//! Control commands: the service's answers to `alive`, `main`, `workers`, `running`, `cancel`,
//! `status`, `history`, `metrics`, `set_log_level` and `run`, and publishing the replies.

use std::collections::HashMap;

use dispatcher_core::broker;
use dispatcher_core::call::new_uuid;
use dispatcher_core::pool::CallKey;
use dispatcher_core::{Call, CallFilter, ControlMessage, Outcome, TaskMessage};
use serde_json::{json, Map, Value};

use super::{Loop, Stage, LOCAL_CHANNEL};

/// How many of the newest Calls the `status` command includes.
const STATUS_HISTORY: u64 = 20;

impl Loop {
    pub(super) fn control(&mut self, msg: ControlMessage) -> Value {
        // Replies read the history: it must hold every Call finished so far.
        self.flush_finished();
        self.counters.control += 1;
        let data = msg.control_data;
        match msg.control.as_str() {
            "alive" => json!({}),
            "main" => self.main_status(),
            "workers" => self.workers_status(),
            "running" => self.running(&data),
            "cancel" => self.cancel(&data),
            "history" => self.history(&data),
            "metrics" => self.metrics(),
            "status" => json!({
                "alive": {},
                "main": self.main_status(),
                "workers": self.workers_status(),
                "running": self.running(&Map::new()),
                "metrics": self.metrics(),
                // The newest Calls only: the whole history is the `history` command's.
                "history": self.history(&[("limit".to_owned(), json!(STATUS_HISTORY))].into_iter().collect()),
            }),
            "run" => match serde_json::from_value::<TaskMessage>(Value::Object(data.clone())) {
                Ok(mut m) => {
                    let uuid = m.uuid.get_or_insert_with(new_uuid).clone();
                    match self.accept_task(m, LOCAL_CHANNEL, None) {
                        Ok(()) => {
                            let mut ack = data;
                            ack.insert("uuid".into(), Value::from(uuid));
                            json!({ "ack": ack })
                        }
                        Err(reason) => json!({ "error": reason }),
                    }
                }
                Err(e) => json!({ "error": format!("control_data is not a task message: {e}") }),
            },
            "set_log_level" => match (
                data.get("level").and_then(|l| match l {
                    // dispatcherd also takes Python's numeric levels (logging.WARNING is 30).
                    Value::Number(n) => Some(n.to_string()),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                }),
                &self.log_control,
            ) {
                (Some(level), Some(ctl)) => match ctl.set_level(&level) {
                    Ok(previous) => {
                        tracing::info!(%level, %previous, "log level changed");
                        json!({ "level": level, "previous_level": previous })
                    }
                    Err(e) => json!({ "error": format!("log level {level:?} refused: {e}") }),
                },
                (None, _) => {
                    json!({ "error": "set_log_level needs control_data {\"level\": \"<filter>\"}, e.g. {\"level\": \"debug\"}" })
                }
                (Some(_), None) => {
                    json!({ "error": "this service has no log level control (ServiceBuilder::log_control)" })
                }
            },
            other => json!({ "error": format!("No control method {other}") }),
        }
    }

    pub(super) fn main_status(&self) -> Value {
        let c = &self.counters;
        let running = self
            .pending
            .values()
            .filter(|p| p.stage == Stage::Running)
            .count();
        json!({
            "node_id": self.config.node_id,
            "pid": std::process::id(),
            "received_count": c.received,
            "control_count": c.control,
            "uptime": self.started.elapsed().as_secs_f64(),
            "registered_tasks": self.registry.names(),
            "brokers": self.brokers.iter().map(|b| b.status()).collect::<Vec<_>>(),
            "pool": {
                "finished_count": c.by_outcome.iter().sum::<u64>(),
                "dispatched_count": c.dispatched,
                "canceled_count": c.by_outcome[Outcome::Canceled as usize],
                "discard_count": c.by_outcome[Outcome::Discarded as usize],
                "rejected_count": c.by_outcome[Outcome::Rejected as usize],
                "running_count": running,
                "queued_count": self.queue.len(),
                "blocked_count": self.dups.blocked_count(),
                "delayed_count": self.pending.values().filter(|p| p.stage == Stage::Delayed).count(),
                "workers": self.pool.workers().len(),
            },
        })
    }

    pub(super) fn workers_status(&self) -> Value {
        let mut m = Map::new();
        for w in self.pool.workers() {
            let v = serde_json::to_value(&w).unwrap_or(Value::Null);
            m.insert(format!("worker-{}", w.worker_id), v);
        }
        Value::Object(m)
    }

    pub(super) fn metrics(&self) -> Value {
        let c = &self.counters;
        let mut finished = Map::new();
        for o in Outcome::ALL {
            finished.insert(o.as_str().to_owned(), Value::from(c.by_outcome[o as usize]));
        }
        json!({
            "received": c.received,
            "control": c.control,
            "dispatched": c.dispatched,
            "ignored_fields": c.ignored_fields,
            "signature_failures": c.signature_failures,
            "finished": finished,
            "waiting": self.waiting_count(),
            "queue_depth": self.queue.len(),
            "partial_chunked_messages": self.assembler.partial_count(),
            "history_size": self.shared.history().len(),
            // dispatcherd's `metrics` reply: is an HTTP metrics endpoint serving, and where.
            "enabled": self.config.metrics_endpoint.is_some(),
            "status": self.config.metrics_endpoint.as_deref().map(|addr| {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
                json!({ "host": host, "port": port.parse::<u16>().ok(), "ready": true })
            }),
        })
    }

    pub(super) fn matching(
        &self,
        data: &Map<String, Value>,
    ) -> std::result::Result<Vec<CallKey>, String> {
        for k in data.keys() {
            if !matches!(k.as_str(), "task" | "uuid" | "args" | "kwargs") {
                return Err(format!(
                    "unknown filter field {k:?}; use any of task, uuid, args, kwargs"
                ));
            }
        }
        let mut keys: Vec<CallKey> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                data.get("task")
                    .is_none_or(|t| t.as_str() == Some(p.call.task.as_str()))
                    && data
                        .get("uuid")
                        .is_none_or(|u| u.as_str() == Some(p.call.uuid.as_str()))
                    && data.get("args").is_none_or(|a| *a == p.call.args)
                    && data.get("kwargs").is_none_or(|k| *k == p.call.kwargs)
            })
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        Ok(keys)
    }

    pub(super) fn describe(&self, keys: &[CallKey]) -> Value {
        let mut out = Map::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for k in keys {
            let Some(p) = self.pending.get(k) else {
                continue;
            };
            let name = match p.stage {
                Stage::Running => match p.call.worker_id {
                    Some(w) if !out.contains_key(&format!("worker-{w}")) => format!("worker-{w}"),
                    // A pool without worker ids, or two Calls on one worker: keep both.
                    _ => {
                        let n = counts.entry("running").or_default();
                        let name = format!("running-{n}");
                        *n += 1;
                        name
                    }
                },
                other => {
                    let prefix = match other {
                        Stage::Delayed => "delayed",
                        Stage::Blocked => "blocked",
                        _ => "queued",
                    };
                    let n = counts.entry(prefix).or_default();
                    let name = format!("{prefix}-{n}");
                    *n += 1;
                    name
                }
            };
            out.insert(name, message_json(&p.call));
        }
        Value::Object(out)
    }

    pub(super) fn running(&self, data: &Map<String, Value>) -> Value {
        match self.matching(data) {
            Ok(keys) => self.describe(&keys),
            Err(e) => json!({ "error": e }),
        }
    }

    pub(super) fn cancel(&mut self, data: &Map<String, Value>) -> Value {
        let keys = match self.matching(data) {
            Ok(k) => k,
            Err(e) => return json!({ "error": e }),
        };
        let reply = self.describe(&keys);
        for key in keys {
            let running = self
                .pending
                .get(&key)
                .is_some_and(|p| p.stage == Stage::Running);
            if running {
                if !self.pool.cancel(key) {
                    tracing::warn!(key, "pool did not know a running Call to cancel");
                }
            } else {
                self.remove_waiting(key, Outcome::Canceled, "canceled before it started");
            }
        }
        reply
    }

    pub(super) fn history(&self, data: &Map<String, Value>) -> Value {
        let mut filter = CallFilter::default();
        for (k, v) in data {
            match (k.as_str(), v) {
                ("task", Value::String(s)) => filter.task = Some(s.clone()),
                ("uuid", Value::String(s)) => filter.uuid = Some(s.clone()),
                ("outcome", Value::String(s)) => match Outcome::parse(s) {
                    Some(o) => filter.outcome = Some(o),
                    None => {
                        return json!({ "error": format!("unknown outcome {s:?}; use one of ok, error, panic, timeout, canceled, worker_lost, discarded, rejected") })
                    }
                },
                ("limit", v) if v.as_u64().is_some() => {
                    filter.limit = v.as_u64().map(|n| n as usize)
                }
                (k, v) => {
                    return json!({ "error": format!("bad history filter {k:?} = {v}; use task (string), uuid (string), outcome (string), limit (integer)") })
                }
            }
        }
        json!({ "calls": self.shared.history().select(&filter) })
    }

    /// Publishes a control reply (with this node's id) on `reply_to` through `broker`.
    pub(super) fn send_reply(&self, broker: usize, reply_to: String, mut reply: Value) {
        let Some(b) = self.brokers.get(broker).cloned() else {
            return;
        };
        if let Value::Object(m) = &mut reply {
            m.entry("node_id")
                .or_insert_with(|| Value::from(self.config.node_id.clone()));
        }
        let signing = self.signing.clone();
        tokio::spawn(async move {
            let payload = match &signing {
                Some(k) => match k.sign(&reply.to_string()) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not sign a control reply");
                        return;
                    }
                },
                None => reply.to_string(),
            };
            if let Err(e) = broker::send(&*b, &reply_to, &payload).await {
                tracing::warn!(channel = %reply_to, error = %e, "could not publish control reply");
            }
        });
    }
}

fn message_json(call: &Call) -> Value {
    json!({
        "task": call.task,
        "uuid": call.uuid,
        "args": call.args,
        "kwargs": call.kwargs,
        "time_pub": call.time_pub,
    })
}
