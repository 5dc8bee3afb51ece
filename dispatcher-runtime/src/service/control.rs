//! Control commands: the service's typed answers ([`dispatcher_core::control`]) to every
//! [`Command`], and publishing the replies.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use dispatcher_core::broker;
use dispatcher_core::call::{new_uuid, now_epoch};
use dispatcher_core::control::{
    history_query, tasks_reply, worker_key, AioTask, AioTasksReply, AliveReply, BrokerSelfCheck,
    CallSelector, ChunksReply, Command, ErrorReply, HistoryReply, LogLevelReply, LogLevelRequest,
    MainReply, MetricsEndpoint, MetricsReply, PoolSummary, ProducerStatus, ProducersReply,
    RunReply, RunningEntry, RunningReply, StatusReply, WorkersReply,
};
use dispatcher_core::pool::CallKey;
use dispatcher_core::{Call, CallFilter, ControlMessage, Outcome, TaskMessage};
use serde_json::{Map, Value};

use super::{to_value, Loop, Stage, LOCAL_CHANNEL};

/// How many candidates the error of an ambiguous uuid prefix names.
const AMBIGUOUS_SHOWN: usize = 10;

/// How many of the newest Calls the `status` command includes.
const STATUS_HISTORY: usize = 20;

/// The logger name `set_log_level` replies with (dispatcherd names its Python logger).
const LOGGER: &str = "dispatcher";

/// An error reply.
fn error(text: impl Into<String>) -> Value {
    to_value(&ErrorReply { error: text.into() })
}

impl Loop {
    /// Answers a control command (the reply without `node_id`, which [`Loop::send_reply`] adds).
    pub(super) fn control(&mut self, msg: ControlMessage) -> Value {
        // Replies read the history: it must hold every Call finished so far.
        self.flush_finished();
        self.counters.control += 1;
        let data = msg.control_data;
        let Some(command) = Command::parse(&msg.control) else {
            return error(format!("No control method {}", msg.control));
        };
        match command {
            Command::Alive => to_value(&AliveReply {}),
            Command::Main => to_value(&self.main_reply()),
            Command::Workers => to_value(&self.workers_reply()),
            Command::Running => match CallSelector::from_data(&data) {
                Ok(s) => to_value(&self.running_reply(&self.matching(&s))),
                Err(e) => error(e),
            },
            Command::Cancel => match CallSelector::from_data(&data) {
                Ok(s) => match self.cancel(&s) {
                    Ok(reply) => to_value(&reply),
                    Err(e) => error(e),
                },
                Err(e) => error(e),
            },
            Command::History => match history_query(&data) {
                Ok(q) => to_value(&self.history_reply(&q)),
                Err(e) => error(e),
            },
            Command::Metrics => to_value(&self.metrics_reply()),
            Command::Status => to_value(&StatusReply {
                main: self.main_reply(),
                workers: self.workers_reply(),
                running: self.running_reply(&self.matching(&CallSelector::default())),
                aio_tasks: self.aio_tasks_reply(),
                producers: self.producers_reply(),
                metrics: self.metrics_reply(),
                chunks: self.chunks_reply(),
                // The newest Calls only: the whole history is the `history` command's.
                history: Some(self.history_reply(&CallFilter {
                    limit: Some(STATUS_HISTORY),
                    ..CallFilter::default()
                })),
            }),
            Command::Run => self.run_command(data),
            Command::SetLogLevel => self.set_log_level(&data),
            Command::AioTasks => to_value(&self.aio_tasks_reply()),
            Command::Chunks => to_value(&self.chunks_reply()),
            Command::Producers => to_value(&self.producers_reply()),
            Command::Tasks => to_value(&tasks_reply(&*self.registry)),
            // A command of a newer contract this loop does not serve yet.
            _ => error(format!("No control method {}", msg.control)),
        }
    }

    fn run_command(&mut self, data: Map<String, Value>) -> Value {
        match serde_json::from_value::<TaskMessage>(Value::Object(data.clone())) {
            Ok(mut m) => {
                let uuid = m.uuid.get_or_insert_with(new_uuid).clone();
                self.counters.control_runs += 1;
                match self.accept_task(m, LOCAL_CHANNEL, None) {
                    Ok(()) => to_value(&RunReply {
                        ack: data,
                        uuid: Some(uuid),
                    }),
                    Err(rejection) => error(rejection.message),
                }
            }
            Err(e) => error(format!("control_data is not a task message: {e}")),
        }
    }

    fn set_log_level(&mut self, data: &Map<String, Value>) -> Value {
        let request = match LogLevelRequest::from_data(data) {
            Ok(r) => r,
            Err(e) => return error(e.to_string()),
        };
        let Some(ctl) = &self.log_control else {
            return error("this service has no log level control (ServiceBuilder::log_control)");
        };
        let level = request.level;
        match ctl.set_level(&level) {
            Ok(previous) => {
                tracing::info!(%level, %previous, "log level changed");
                to_value(&LogLevelReply {
                    logger: LOGGER.to_owned(),
                    level,
                    previous_level: previous,
                })
            }
            Err(e) => error(format!("log level {level:?} refused: {e}")),
        }
    }

    fn main_reply(&self) -> MainReply {
        let c = &self.counters;
        let finished_by_worker = [
            Outcome::Ok,
            Outcome::Error,
            Outcome::Panic,
            Outcome::Timeout,
            Outcome::WorkerLost,
        ]
        .iter()
        .map(|o| c.by_outcome[*o as usize])
        .sum();
        let stats = self.pool.stats();
        let count = |stage| self.pending.values().filter(|p| p.stage == stage).count() as u64;
        MainReply {
            pid: std::process::id(),
            received_count: c.received,
            control_count: c.control,
            uptime: self.started.elapsed().as_secs_f64(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            registered_tasks: self
                .registry
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            brokers: self.brokers.iter().map(|b| b.status()).collect(),
            pool: PoolSummary {
                next_worker_id: stats.next_worker_id,
                finished_count: finished_by_worker,
                canceled_count: c.by_outcome[Outcome::Canceled as usize],
                retirement_count: stats.retirement_count,
                worker_ct: self.pool.workers().len() as u64,
                running_ct: self.running as u64,
                active_task_ct: (self.running + self.queue.len()) as u64,
                dispatched_count: c.dispatched,
                discard_count: c.by_outcome[Outcome::Discarded as usize],
                rejected_count: c.by_outcome[Outcome::Rejected as usize],
                queued_count: self.queue.len() as u64,
                blocked_count: self.dups.blocked_count() as u64,
                delayed_count: count(Stage::Delayed),
            },
        }
    }

    fn workers_reply(&self) -> WorkersReply {
        self.pool
            .workers()
            .into_iter()
            .map(|w| (worker_key(w.worker_id), w))
            .collect()
    }

    fn metrics_reply(&self) -> MetricsReply {
        let c = &self.counters;
        MetricsReply {
            received: c.received,
            control: c.control,
            dispatched: c.dispatched,
            ignored_fields: c.ignored_fields,
            signature_failures: c.signature_failures,
            finished: Outcome::ALL
                .iter()
                .map(|o| (o.as_str().to_owned(), c.by_outcome[*o as usize]))
                .collect(),
            waiting: self.waiting_count() as u64,
            queue_depth: self.queue.len() as u64,
            partial_chunked_messages: self.assembler.partial_count() as u64,
            history_size: self.shared.history().len() as u64,
            // dispatcherd's part: is an HTTP metrics endpoint serving, and where.
            enabled: self.config.metrics_endpoint.is_some(),
            status: self.config.metrics_endpoint.as_deref().map(|addr| {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
                MetricsEndpoint {
                    host: host.to_owned(),
                    port: port.parse::<u16>().ok(),
                    ready: true,
                    extra: Map::new(),
                }
            }),
        }
    }

    fn history_reply(&self, filter: &CallFilter) -> HistoryReply {
        HistoryReply {
            calls: self.shared.history().select(filter),
        }
    }

    fn aio_tasks_reply(&self) -> AioTasksReply {
        let mut out = BTreeMap::new();
        out.insert(
            "service-loop".to_owned(),
            AioTask {
                done: self.stopping,
                stack: format!(
                    "the service loop of {}: {} Calls in flight",
                    self.config.node_id,
                    self.pending.len()
                ),
            },
        );
        for (i, p) in self.producers.iter().enumerate() {
            out.insert(
                format!("scheduled-producer-{i}"),
                AioTask {
                    done: p.is_finished(),
                    stack: "submits a scheduled task at its interval".to_owned(),
                },
            );
        }
        out
    }

    fn chunks_reply(&self) -> ChunksReply {
        ChunksReply {
            status: self.assembler.stats(),
            partials: self
                .assembler
                .partials(Instant::now())
                .into_iter()
                .collect(),
        }
    }

    fn producers_reply(&self) -> ProducersReply {
        let uptime = self.started.elapsed().as_secs_f64();
        let c = &self.counters;
        let mut out = BTreeMap::new();
        for (i, b) in self.brokers.iter().enumerate() {
            let status = b.status();
            let check = status.self_check.as_ref().map(|s| BrokerSelfCheck {
                enabled: true,
                success_count: s.count.saturating_sub(s.failures),
                average_time_seconds: s.mean_rtt_ms.map(|ms| ms / 1000.0),
                max_time_seconds: s.max_rtt_ms.map(|ms| ms / 1000.0),
            });
            // dispatcherd names a brokered producer after its broker; a second broker of the
            // same kind gets its index.
            let mut name = format!("{}-producer", status.broker);
            if out.contains_key(&name) {
                name = format!("{}-producer-{i}", status.broker);
            }
            out.insert(
                name,
                ProducerStatus {
                    produced_count: c.per_broker.get(i).copied().unwrap_or(0),
                    uptime_seconds: uptime,
                    recycle_count: Some(status.recycles),
                    broker_self_check: check,
                },
            );
        }
        for (name, produced) in [
            ("on-start-producer", c.on_start),
            ("scheduled-producer", c.scheduled),
            ("control-producer", c.control_runs),
        ] {
            out.insert(
                name.to_owned(),
                ProducerStatus {
                    produced_count: produced,
                    uptime_seconds: uptime,
                    ..ProducerStatus::default()
                },
            );
        }
        out
    }

    /// The Calls in flight that `selector` matches, oldest first.
    fn matching(&self, selector: &CallSelector) -> Vec<CallKey> {
        let mut keys: Vec<CallKey> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                selector.matches(&p.call.task, &p.call.uuid, &p.call.args, &p.call.kwargs)
            })
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys
    }

    fn running_reply(&self, keys: &[CallKey]) -> RunningReply {
        let mut out = BTreeMap::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut next = |prefix: &'static str| {
            let n = counts.entry(prefix).or_default();
            let name = format!("{prefix}-{n}");
            *n += 1;
            name
        };
        for k in keys {
            let Some(p) = self.pending.get(k) else {
                continue;
            };
            let name = match (p.stage, p.call.worker_id) {
                // Handed to a worker, waiting behind its running job: not started yet.
                (Stage::Running, _) if p.call.started_at.is_none() => next("queued"),
                (Stage::Running, Some(w)) if !out.contains_key(&worker_key(w)) => worker_key(w),
                // A pool without worker ids, or two Calls on one worker: keep both.
                (Stage::Running, _) => next("running"),
                (Stage::Delayed, _) => next("delayed"),
                (Stage::Blocked, _) => next("blocked"),
                (Stage::Queued, _) => next("queued"),
            };
            let mut entry = running_entry(&p.call);
            let now = now_epoch();
            match p.stage {
                Stage::Running => {
                    entry.run_s = p.call.started_at.map(|t| round_ms(now - t).max(0.0));
                }
                Stage::Delayed => {
                    entry.due_at = p.due_at;
                    entry.due_in_s = p.due_at.map(|t| round_ms(t - now).max(0.0));
                }
                Stage::Blocked | Stage::Queued => {}
            }
            out.insert(name, entry);
        }
        out
    }

    /// Cancels what `selector` matches. A uuid prefix that matches the Calls of more than one
    /// uuid is refused (nothing is canceled) with the candidates named, unless one of them is
    /// exactly the uuid given.
    fn cancel(&mut self, selector: &CallSelector) -> Result<RunningReply, String> {
        let mut keys = self.matching(selector);
        if let Some(given) = selector.uuid.as_deref() {
            keys = self.unambiguous(given, keys)?;
        }
        let reply = self.running_reply(&keys);
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
        Ok(reply)
    }

    /// `keys` (matched by the uuid or uuid prefix `given`) when they are the Calls of one uuid;
    /// only those of exactly `given` when some are; otherwise an error naming the candidates.
    fn unambiguous(&self, given: &str, keys: Vec<CallKey>) -> Result<Vec<CallKey>, String> {
        let uuid_of = |k: &CallKey| self.pending.get(k).map(|p| p.call.uuid.as_str());
        if keys.iter().any(|k| uuid_of(k) == Some(given)) {
            return Ok(keys
                .into_iter()
                .filter(|k| uuid_of(k) == Some(given))
                .collect());
        }
        let mut uuids: Vec<&str> = keys.iter().filter_map(uuid_of).collect();
        uuids.sort_unstable();
        uuids.dedup();
        if uuids.len() <= 1 {
            return Ok(keys);
        }
        let shown = uuids
            .iter()
            .take(AMBIGUOUS_SHOWN)
            .copied()
            .collect::<Vec<_>>();
        let more = uuids.len().saturating_sub(AMBIGUOUS_SHOWN);
        Err(format!(
            "uuid prefix {given:?} is ambiguous: it matches {} Calls ({}{}); nothing canceled; \
             give more characters of the uuid",
            uuids.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
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

/// A Call in flight as `running` lists it: the message as received, and where it stands.
fn running_entry(call: &Call) -> RunningEntry {
    RunningEntry {
        task: call.task.clone(),
        uuid: call.uuid.clone(),
        args: call.args.as_array().cloned().unwrap_or_default(),
        kwargs: call.kwargs.as_object().cloned().unwrap_or_default(),
        time_pub: call.time_pub,
        channel: (call.channel != LOCAL_CHANNEL).then(|| call.channel.to_string()),
        guid: call.guid.clone(),
        received_at: call.received_at,
        started_at: call.started_at,
        due_at: None,
        run_s: None,
        due_in_s: None,
        parent_uuid: call.parent_uuid.clone(),
        extra: Map::new(),
    }
}

/// Seconds rounded to the millisecond.
fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}
