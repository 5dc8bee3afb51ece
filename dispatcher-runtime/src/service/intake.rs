//! Intake: a payload from a broker becomes a Call, in the order the checks run: size, signature
//! (when required), chunk reassembly, decode, then for tasks registry lookup and argument
//! binding; control messages go to [`super::control`]. Anything that fails a check is recorded
//! as a `rejected` Call whose error says why.

use std::time::{Duration, Instant};

use dispatcher_core::call::{new_uuid, now_epoch};
use dispatcher_core::control::ErrorReply;
use dispatcher_core::message::{decode, Decoded};
use dispatcher_core::{Call, Error, Incoming, RejectReason, Rejection, Settlement, TaskMessage};
use serde_json::Value;

use super::record::call_span;
use super::{to_value, Loop, Pending, Stage};

impl Loop {
    pub(super) fn on_incoming(&mut self, broker: usize, mut msg: Incoming) {
        // A durable broker's handle goes to the Call this payload becomes (or is settled below
        // when it becomes none: a control command, a chunk awaiting the rest).
        self.delivery = msg.delivery.take();
        self.take_payload(broker, msg);
        if let Some(d) = self.delivery.take() {
            tracing::debug!(
                delivery = d.id(),
                "durable payload made no Call; settled as complete"
            );
            d.settle(Settlement::Complete);
        }
    }

    fn take_payload(&mut self, broker: usize, msg: Incoming) {
        if let Some(n) = self.counters.per_broker.get_mut(broker) {
            *n += 1;
        }
        if msg.payload.len() > self.config.chunks.max_payload_bytes {
            self.counters.received += 1;
            let e = Error::TooLarge {
                what: "payload",
                size: msg.payload.len(),
                limit: self.config.chunks.max_payload_bytes,
            };
            self.reject_payload(&msg.channel, e.into());
            return;
        }
        if self.signing.is_some() && !msg.payload.contains("\"__dispatcherd_chunk__\"") {
            // Not a piece of a larger payload: it must be a signed envelope itself.
            self.on_payload(broker, &msg.channel, &msg.payload);
            return;
        }
        match decode(&msg.payload) {
            Ok((Decoded::Chunk(env), _)) => match self.assembler.push(env, Instant::now()) {
                Ok(Some(whole)) => self.on_payload(broker, &msg.channel, &whole),
                Ok(None) => {}
                Err(e) => {
                    self.counters.received += 1;
                    self.reject_payload(&msg.channel, e.into());
                }
            },
            Ok((decoded, ignored)) if self.signing.is_none() => {
                self.on_decoded(broker, &msg.channel, decoded, ignored.any())
            }
            // Signatures are required and this is not a chunk envelope (the chunk key was only
            // somewhere inside it): it must verify like any whole payload.
            Ok(_) => self.on_payload(broker, &msg.channel, &msg.payload),
            Err(e) => {
                let trusted = self.signing.is_none();
                self.reject_undecodable(broker, &msg.channel, &msg.payload, trusted, e.into());
            }
        }
    }

    /// A whole payload (unchunked or reassembled): verified when signatures are required, then
    /// decoded.
    pub(super) fn on_payload(&mut self, broker: usize, channel: &str, payload: &str) {
        let verified;
        let payload = match &self.signing {
            Some(key) => match key.verify(payload) {
                Ok(inner) => {
                    verified = inner;
                    verified.as_str()
                }
                Err(e) => {
                    self.counters.received += 1;
                    self.counters.signature_failures += 1;
                    self.reject_payload(channel, e.into());
                    return;
                }
            },
            None => payload,
        };
        match decode(payload) {
            Ok((Decoded::Chunk(_), _)) => {
                self.counters.received += 1;
                self.reject_payload(
                    channel,
                    Rejection::new(
                        RejectReason::Chunk,
                        "a chunk envelope inside a chunked message",
                    ),
                );
            }
            Ok((decoded, ignored)) => self.on_decoded(broker, channel, decoded, ignored.any()),
            Err(e) => self.reject_undecodable(broker, channel, payload, true, e.into()),
        }
    }

    pub(super) fn on_decoded(
        &mut self,
        broker: usize,
        channel: &str,
        decoded: Decoded,
        ignored: bool,
    ) {
        match decoded {
            Decoded::Task(t) => {
                if ignored {
                    self.counters.ignored_fields += 1;
                    tracing::debug!(task = %t.task, "ignored timeout/on_duplicate/bind fields: the registry decides");
                }
                let _ = self.accept_task(t, channel, None);
            }
            Decoded::Control(c) => {
                if let Some(r) = &c.reply_to {
                    let data = serde_json::to_string(&c.control_data).unwrap_or_default();
                    if !self.answered.first(self.via_control, r, &c.control, &data) {
                        tracing::debug!(reply_to = %r, channel, "copy of a control command answered already; dropped");
                        return;
                    }
                }
                let reply_to = c.reply_to.clone();
                let reply = self.control(c);
                if let Some(reply_to) = reply_to {
                    self.send_reply(broker, reply_to, reply);
                }
            }
            // Chunks are reassembled before this point; nothing else is decoded yet.
            _ => {}
        }
    }

    /// A payload was rejected: record it, and when it looks like a control message with a
    /// `reply_to`, answer there with the error too (the client would otherwise wait in vain).
    /// `trusted`: the payload is verified, or signatures are not required; an unverified one
    /// gets no reply.
    pub(super) fn reject_undecodable(
        &mut self,
        broker: usize,
        channel: &str,
        payload: &str,
        trusted: bool,
        rejection: Rejection,
    ) {
        self.counters.received += 1;
        if let Some(reply_to) = trusted
            .then(|| dispatcher_core::message::control_reply_to(payload))
            .flatten()
        {
            let reply = ErrorReply {
                error: rejection.message.clone(),
            };
            self.send_reply(broker, reply_to, to_value(&reply));
        }
        self.reject_payload(channel, rejection);
    }

    /// Takes a task message in; returns the rejection when it was rejected at once.
    pub(super) fn accept_task(
        &mut self,
        msg: TaskMessage,
        channel: &str,
        parent: Option<String>,
    ) -> std::result::Result<(), Rejection> {
        self.counters.received += 1;
        let uuid = msg.uuid.unwrap_or_else(new_uuid);
        let channel = self.names.channel(channel);
        let mut call = Call::received(uuid, msg.task, self.names.node_id.clone(), channel);
        if parent.is_none() {
            call.delivery = self.delivery.take();
            call.attempt = call.delivery.as_ref().map(|d| d.attempt());
        }
        call.args = Value::Array(msg.args.clone());
        call.kwargs = Value::Object(msg.kwargs.clone());
        call.time_pub = msg.time_pub;
        call.guid = msg.guid;
        call.parent_uuid = parent;
        let Some(task) = self.registry.lookup(&call.task) else {
            let rejection = Rejection::from(Error::UnknownTask {
                name: call.task.clone(),
            });
            self.reject(call, rejection.clone());
            return Err(rejection);
        };
        if let Some(attempt) = call.attempt {
            let allowed = call
                .delivery
                .as_ref()
                .and_then(|d| d.max_attempts())
                .unwrap_or_else(|| task.config().attempts_allowed());
            if attempt > allowed {
                let rejection = Rejection::new(
                    RejectReason::Attempts,
                    format!(
                        "attempt {attempt} of a job whose earlier run was lost (its lease expired); task {} allows {allowed} attempts (max_attempts)",
                        call.task
                    ),
                );
                self.reject(call, rejection.clone());
                return Err(rejection);
            }
        }
        let args = match task.bind(msg.args, msg.kwargs) {
            Ok(a) => a,
            Err(e) => {
                let rejection = Rejection::from(e);
                self.reject(call, rejection.clone());
                return Err(rejection);
            }
        };
        if self.waiting_count() >= self.config.max_waiting {
            let rejection = Rejection::new(
                RejectReason::Capacity,
                format!(
                    "service is at capacity: {} Calls waiting (max_waiting); the Call was not accepted",
                    self.config.max_waiting
                ),
            );
            self.reject(call, rejection.clone());
            return Err(rejection);
        }
        let delay = match msg.delay {
            Some(d) if d > 0.0 => match Duration::try_from_secs_f64(d) {
                Ok(d) if d <= self.config.max_delay => Some(d),
                _ => {
                    let rejection = Rejection::new(
                        RejectReason::Delay,
                        format!(
                            "delay of {d} seconds exceeds the limit of {} seconds (max_delay)",
                            self.config.max_delay.as_secs()
                        ),
                    );
                    self.reject(call, rejection.clone());
                    return Err(rejection);
                }
            },
            _ => None,
        };
        let key = self.next_key();
        let span = call_span(&call.uuid, task.name());
        let mut p = Box::new(Pending {
            call,
            task,
            args,
            stage: Stage::Delayed,
            dup_key: None,
            due_at: None,
            span,
        });
        if let Some(d) = delay {
            let now = now_epoch();
            p.call.queued_at = Some(now);
            p.due_at = Some(now + d.as_secs_f64());
            self.pending.insert(key, p);
            self.delayed.push(Instant::now() + d, key);
        } else {
            self.pending.insert(key, p);
            self.admit(key);
        }
        Ok(())
    }
}
