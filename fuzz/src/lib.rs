//! What the fuzz targets run, kept in a library so each target is one line and the checks are
//! in one place.
//!
//! * [`decode_and_assemble`]: the input as text (lossy UTF-8) through `decode`; then as a
//!   sequence of payloads (one per line) through `decode`, an `Assembler` with small limits and
//!   a clock that moves, and argument binding against a small registry, checking the
//!   assembler's bounds after every step; then `split` and reassembly of the whole text, which
//!   must give it back.
//! * [`Intake`]: the same payloads published to a real service (memory broker, in-process
//!   pool) that runs for the whole fuzzing session: after each input a sentinel message must
//!   come out as a `rejected` Call within seconds (so nothing stalled the loop), and the
//!   service's `metrics` must show its bounds held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dispatcher_core::chunk::{split, Assembler, AssemblerLimits};
use dispatcher_core::message::{decode, Decoded, MAX_ID_LEN, MAX_TASK_NAME};
use dispatcher_core::{task, CallFilter, Outcome, Registry, TaskContext, TaskRegistry};
use dispatcher_runtime::ServiceConfig;
use dispatcher_testkit::{MemoryBroker, TestService};
use serde_json::{json, Map, Value};

/// Takes the length of a text.
#[task(name = "fuzz.len")]
pub fn text_len(text: String) -> usize {
    text.len()
}

/// Adds two integers (without overflowing).
#[task(name = "fuzz.add")]
pub fn add(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

/// Optional, nested and floating point parameters.
#[task(name = "fuzz.opt")]
pub fn opt(bytes: Option<Vec<u8>>, ratio: Option<f64>, pairs: Vec<(String, u16)>) -> usize {
    bytes.map_or(0, |b| b.len()) + usize::from(ratio.is_some()) + pairs.len()
}

/// Runs one at a time per arguments.
#[task(name = "fuzz.serial", on_duplicate = "serial")]
pub fn serial(n: u32) -> u32 {
    n
}

/// Keeps at most one waiting duplicate.
#[task(name = "fuzz.queue_one", on_duplicate = "queue_one")]
pub fn queue_one(n: u32) -> u32 {
    n
}

/// Submits up to 8 children.
#[task(name = "fuzz.fanout", context)]
pub fn fanout(ctx: &TaskContext, n: u8) -> Result<usize, dispatcher_core::Error> {
    for i in 0..n.min(8) {
        ctx.submit(add::call(i64::from(i), 1))?;
    }
    Ok(usize::from(n.min(8)))
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<text_len>()
        .register::<add>()
        .register::<opt>()
        .register::<serial>()
        .register::<queue_one>()
        .register::<fanout>()
}

fn shared_registry() -> &'static TaskRegistry {
    static REGISTRY: OnceLock<TaskRegistry> = OnceLock::new();
    REGISTRY.get_or_init(registry)
}

/// Small limits, so that inputs of a few kilobytes reach every bound.
pub const LIMITS: AssemblerLimits = AssemblerLimits {
    max_partials: 4,
    max_payload_bytes: 4096,
    max_buffered_bytes: 2048,
    expiry: Duration::from_secs(3),
};

/// Most payloads (lines) taken from one input.
const MAX_LINES: usize = 256;

/// Decodes one payload and checks what `decode` promises.
fn check_decode(payload: &str) -> Option<Decoded> {
    match decode(payload) {
        Ok((d, _)) => {
            match &d {
                Decoded::Task(t) => {
                    assert!(!t.task.is_empty() && t.task.len() <= MAX_TASK_NAME);
                    assert!(t.uuid.as_ref().is_none_or(|u| u.len() <= MAX_ID_LEN));
                    assert!(t.guid.as_ref().is_none_or(|g| g.len() <= MAX_ID_LEN));
                    assert!(t.delay.is_none_or(|d| d.is_finite() && d >= 0.0));
                    assert!(t.time_pub.is_none_or(f64::is_finite));
                }
                Decoded::Chunk(c) => assert_eq!(c.version, "v1"),
                _ => {}
            }
            Some(d)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// A whole payload as the service takes it: decoded, and a task's arguments bound and checked.
fn take_in(payload: &str) {
    if let Some(Decoded::Task(t)) = check_decode(payload) {
        if let Some(desc) = shared_registry().lookup(&t.task) {
            match desc.bind(t.args, t.kwargs) {
                Ok(bound) => assert_eq!(bound.len(), desc.params().len()),
                Err(e) => assert!(e.to_string().contains(desc.name()), "{e}"),
            }
        }
    }
}

/// See the [crate docs](crate).
pub fn decode_and_assemble(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_decode(&text);

    let mut asm = Assembler::new(LIMITS);
    let mut now = Instant::now();
    for (i, line) in text.split('\n').take(MAX_LINES).enumerate() {
        // A clock driven by the input: some lines arrive seconds after the previous one.
        now += Duration::from_millis((line.len() % 7) as u64 * 400);
        match check_decode(line) {
            Some(Decoded::Chunk(env)) => match asm.push(env, now) {
                Ok(Some(whole)) => {
                    assert!(whole.len() <= LIMITS.max_payload_bytes);
                    take_in(&whole);
                }
                Ok(None) => {}
                Err(e) => assert!(e.to_string().contains("chunk"), "{e}"),
            },
            Some(_) => take_in(line),
            None => {}
        }
        if i % 3 == 0 {
            for e in asm.expire(now) {
                assert!(e.received < e.total, "{e}");
            }
        }
        assert!(asm.partial_count() <= LIMITS.max_partials);
        assert!(asm.buffered_bytes() <= LIMITS.max_buffered_bytes);
    }
    asm.expire(now + LIMITS.expiry);
    assert_eq!((asm.partial_count(), asm.buffered_bytes()), (0, 0));

    split_round_trip(&text, 256 + data.len() % 512);
}

/// `split` keeps every piece under `max` and reassembly (in reverse order) gives the text back.
fn split_round_trip(text: &str, max: usize) {
    let pieces = split(text, max).expect("split never fails on a string");
    if pieces.len() == 1 && text.len() < max {
        assert_eq!(pieces[0], text);
        return;
    }
    let mut asm = Assembler::new(AssemblerLimits::default());
    let now = Instant::now();
    let mut whole = None;
    for p in pieces.iter().rev() {
        assert!(p.len() < max, "piece of {} bytes, limit {max}", p.len());
        let Ok((Decoded::Chunk(env), _)) = decode(p) else {
            panic!("a piece of split is not a chunk envelope: {p:?}");
        };
        assert!(whole.is_none(), "assembled before the last piece");
        whole = asm.push(env, now).expect("split pieces assemble");
    }
    assert_eq!(whole.as_deref(), Some(text));
}

/// The channel the fuzzed service listens on.
pub const CHANNEL: &str = "fuzz";

/// A service that runs for the whole fuzzing session; see the [crate docs](crate).
pub struct Intake {
    rt: tokio::runtime::Runtime,
    svc: TestService,
    sentinels: AtomicU64,
    config: ServiceConfig,
}

impl Intake {
    /// The session's service, started on first use.
    pub fn get() -> &'static Intake {
        static INTAKE: OnceLock<Intake> = OnceLock::new();
        INTAKE.get_or_init(Intake::start)
    }

    fn start() -> Intake {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut config = ServiceConfig::default();
        config.channels = vec![CHANNEL.to_owned()];
        config.history_size = 256;
        config.max_waiting = 1000;
        config.max_delay = Duration::from_secs(1);
        config.shutdown_grace = Duration::from_secs(1);
        config.chunks = LIMITS;
        let c = config.clone();
        let svc = rt
            .block_on(
                TestService::builder()
                    .registry(registry())
                    .memory_broker(MemoryBroker::new().with_max_payload(None))
                    .channel(CHANNEL)
                    .pool(dispatcher_runtime::InProcessPool::new(2))
                    .configure(move |b| b.config(c))
                    .start(),
            )
            .expect("the service starts");
        Intake {
            rt,
            svc,
            sentinels: AtomicU64::new(0),
            config,
        }
    }

    /// Publishes each line of `data` (lossy UTF-8), then a sentinel, and checks the service.
    pub fn feed(&self, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        self.rt.block_on(async {
            let bus = self.svc.broker();
            for line in text.split('\n').take(MAX_LINES) {
                bus.publish(CHANNEL, line)
                    .await
                    .expect("the memory broker takes any payload");
            }
            let n = self.sentinels.fetch_add(1, Ordering::Relaxed);
            let uuid = format!("sentinel-{n}");
            let sentinel = json!({"task": "fuzz.sentinel", "uuid": uuid}).to_string();
            bus.publish(CHANNEL, &sentinel).await.expect("published");
            let filter = CallFilter {
                uuid: Some(uuid.clone()),
                ..CallFilter::default()
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut spins = 0u32;
            let call = loop {
                if let Some(c) = self.svc.handle().history(&filter).pop() {
                    break c;
                }
                assert!(
                    Instant::now() < deadline,
                    "the service did not take the sentinel in within 10 s"
                );
                spins += 1;
                if spins < 2000 {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            assert_eq!(call.outcome, Some(Outcome::Rejected), "{call:?}");
            assert!(call
                .error
                .as_deref()
                .is_some_and(|e| e.contains("unknown task \"fuzz.sentinel\"")));
            let m = tokio::time::timeout(
                Duration::from_secs(10),
                self.svc.handle().control("metrics", Map::new()),
            )
            .await
            .expect("metrics within 10 s")
            .expect("the service answers");
            let held = m["partial_chunked_messages"].as_u64().unwrap_or(u64::MAX);
            assert!(held <= self.config.chunks.max_partials as u64, "{m}");
            let waiting = m["waiting"].as_u64().unwrap_or(u64::MAX);
            assert!(waiting <= self.config.max_waiting as u64, "{m}");
            assert!(m["history_size"].as_u64() <= Some(256), "{m}");
            assert_ne!(m["received"], Value::Null, "{m}");
        });
    }
}
