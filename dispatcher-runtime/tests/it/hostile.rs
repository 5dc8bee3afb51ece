//! Hostile input: whatever arrives, the decoder and the assembler never panic and stay within
//! their bounds, and the service rejects it with a reason naming the problem, records it in the
//! history, logs it, answers control clients, and keeps working.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_core::broker::{self, Broker};
use dispatcher_core::chunk::{split, Assembler, AssemblerLimits};
use dispatcher_core::message::{decode, ChunkEnvelope, Decoded, MAX_ID_LEN, MAX_TASK_NAME};
use dispatcher_core::{task, Call, Outcome, Publisher, TaskRegistry};
use dispatcher_runtime::ServiceConfig;
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::{MemoryBroker, TestService};
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::tasks::double;
use crate::WAIT;

/// The length of its text argument, so a megabyte argument does not come back as a result.
#[task(name = "hostile.len")]
pub fn byte_len(text: String) -> usize {
    text.len()
}

// ----- property tests: decode and Assembler -----

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::from),
        prop_oneof![
            Just("task"),
            Just("control"),
            Just("v1"),
            Just("t.double"),
            Just("alive"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Field names of the wire format, and some others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![
            Just("task"), Just("control"), Just("uuid"), Just("args"), Just("kwargs"),
            Just("time_pub"), Just("guid"), Just("delay"), Just("control_data"), Just("reply_to"),
            Just("timeout"), Just("on_duplicate"), Just("bind"), Just("__dispatcherd_chunk__"),
            Just("message_id"), Just("index"), Just("total"), Just("payload"),
        ].prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// Objects made of wire-format fields with arbitrary values: they reach past the JSON parser
/// into the field checks.
fn message_like() -> impl Strategy<Value = Value> {
    proptest::collection::vec((field_name(), json_value()), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

/// Objects that are mostly chunk envelopes, with fields missing, mistyped or out of range.
fn chunk_like() -> impl Strategy<Value = Value> {
    let version = prop_oneof![8 => Just(json!("v1")), 1 => Just(json!("v2")), 1 => Just(json!(1))];
    let id = prop_oneof![
        8 => "[abc]".prop_map(Value::from),
        1 => Just(json!("")),
        1 => "y{125,130}".prop_map(Value::from),
        1 => Just(json!(7)),
    ];
    let number = || {
        prop_oneof![
            8 => (0u64..6).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => Just(json!(1.5)),
            1 => Just(json!("2")),
        ]
    };
    let payload = prop_oneof![8 => "\\PC{0,40}".prop_map(Value::from), 1 => Just(Value::Null)];
    let field = |name: &'static str, v: BoxedStrategy<Value>| {
        proptest::option::weighted(0.9, v).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    (
        field("__dispatcherd_chunk__", version.boxed()),
        field("message_id", id.boxed()),
        field("index", number().boxed()),
        field("total", number().boxed()),
        field("payload", payload.boxed()),
        proptest::option::of((field_name(), json_value())),
    )
        .prop_map(|(a, b, c, d, e, extra)| {
            Value::Object([a, b, c, d, e, extra].into_iter().flatten().collect())
        })
}

/// What `decode` promises about what it accepts.
fn check_decoded(payload: &str) -> Result<(), TestCaseError> {
    match decode(payload) {
        Ok((Decoded::Task(t), _)) => {
            prop_assert!(!t.task.is_empty() && t.task.len() <= MAX_TASK_NAME);
            prop_assert!(t.uuid.as_ref().is_none_or(|u| u.len() <= MAX_ID_LEN));
            prop_assert!(t.guid.as_ref().is_none_or(|g| g.len() <= MAX_ID_LEN));
            prop_assert!(t.delay.is_none_or(|d| d.is_finite() && d >= 0.0));
            prop_assert!(t.time_pub.is_none_or(f64::is_finite));
        }
        Ok((Decoded::Chunk(c), _)) => prop_assert_eq!(c.version, "v1"),
        Ok(_) => {}
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

/// Limits small enough for a few dozen envelopes to reach every bound.
fn small_limits() -> impl Strategy<Value = AssemblerLimits> {
    (1usize..6, 1usize..400, 0usize..1200, 1u64..5).prop_map(|(partials, payload, buffered, s)| {
        AssemblerLimits {
            max_partials: partials,
            max_payload_bytes: payload,
            max_buffered_bytes: buffered,
            expiry: Duration::from_secs(s),
        }
    })
}

/// Envelopes over a few ids, with indices and totals around and beyond the valid range.
fn envelope() -> impl Strategy<Value = ChunkEnvelope> {
    let total = prop_oneof![
        8 => 0u64..6,
        1 => Just(u64::MAX),
        1 => 1_000u64..2_000_000_000,
    ];
    let index = prop_oneof![8 => 0u64..7, 1 => Just(u64::MAX), 1 => 1_000u64..2_000_000_000];
    let id = prop_oneof![
        8 => "[abc]".prop_map(|s| s),
        1 => Just(String::new()),
        1 => "x{120,140}",
    ];
    (id, index, total, "\\PC{0,60}").prop_map(|(message_id, index, total, payload)| ChunkEnvelope {
        version: "v1".into(),
        message_id,
        index,
        total,
        payload,
    })
}

/// Pushes envelopes (each with a clock step) and checks the bounds after every step.
fn run_assembler(
    limits: AssemblerLimits,
    steps: Vec<(ChunkEnvelope, u8)>,
) -> Result<(), TestCaseError> {
    let mut asm = Assembler::new(limits);
    let t0 = Instant::now();
    let mut now = t0;
    for (env, step) in steps {
        now += Duration::from_millis(u64::from(step) * 50);
        match asm.push(env, now) {
            Ok(Some(whole)) => prop_assert!(whole.len() <= limits.max_payload_bytes),
            Ok(None) => {}
            Err(e) => prop_assert!(e.to_string().contains("chunk")),
        }
        if step % 7 == 0 {
            for e in asm.expire(now) {
                prop_assert!(e.received < e.total, "{e}");
            }
        }
        prop_assert!(asm.partial_count() <= limits.max_partials);
        prop_assert!(asm.buffered_bytes() <= limits.max_buffered_bytes);
        if asm.partial_count() == 0 {
            prop_assert_eq!(asm.buffered_bytes(), 0);
        }
    }
    // Far in the future everything has expired, and nothing is held any more.
    asm.expire(now + limits.expiry);
    prop_assert_eq!((asm.partial_count(), asm.buffered_bytes()), (0, 0));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_decoded(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn decode_never_panics_on_json_like_text(text in "[\\[\\]{}\":,0-9a-z_. \\-eE+\\\\]{0,400}") {
        check_decoded(&text)?;
        check_decoded(&format!("{{\"task\":\"t\",\"args\":[{text}]}}"))?;
    }

    #[test]
    fn decode_never_panics_on_json_values(v in json_value()) {
        check_decoded(&v.to_string())?;
    }

    #[test]
    fn decode_never_panics_on_message_like_objects(v in message_like()) {
        check_decoded(&v.to_string())?;
        check_decoded(&serde_json::to_string_pretty(&v).unwrap())?;
    }

}

proptest! {
    // Each case pushes dozens of envelopes: fewer cases.
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn assembler_stays_within_its_limits(
        limits in small_limits(),
        steps in proptest::collection::vec((envelope(), any::<u8>()), 0..80),
    ) {
        run_assembler(limits, steps)?;
    }

    /// Decoded envelopes (of arbitrary objects) go the same way.
    #[test]
    fn decoded_envelopes_stay_within_limits(
        limits in small_limits(),
        values in proptest::collection::vec(chunk_like(), 0..40),
    ) {
        let mut asm = Assembler::new(limits);
        let now = Instant::now();
        for v in values {
            if let Ok((Decoded::Chunk(env), _)) = decode(&v.to_string()) {
                let _ = asm.push(env, now);
            }
            prop_assert!(asm.partial_count() <= limits.max_partials);
            prop_assert!(asm.buffered_bytes() <= limits.max_buffered_bytes);
        }
    }

    /// A real chunked message, its pieces shuffled among noise on other ids, still assembles
    /// exactly once, to the original text.
    #[test]
    fn real_message_survives_noise(
        text in "\\PC{500,3000}",
        noise in proptest::collection::vec(envelope(), 0..40),
        seed in any::<u64>(),
    ) {
        let payload = json!({"task": "hostile.len", "args": [text]}).to_string();
        let pieces = split(&payload, 300).unwrap();
        let mut envs: Vec<ChunkEnvelope> = pieces
            .iter()
            .map(|p| match decode(p) {
                Ok((Decoded::Chunk(e), _)) => e,
                other => panic!("not a chunk: {other:?}"),
            })
            .collect();
        let real_id = envs[0].message_id.clone();
        envs.extend(noise.into_iter().filter(|e| e.message_id != real_id));
        let mut s = seed | 1;
        for i in (1..envs.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            envs.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut asm = Assembler::new(AssemblerLimits::default());
        let now = Instant::now();
        let mut got = Vec::new();
        for e in envs {
            let id = e.message_id.clone();
            if let Ok(Some(whole)) = asm.push(e, now) {
                if id == real_id {
                    got.push(whole);
                }
            }
        }
        prop_assert_eq!(got, vec![payload]);
    }
}

// ----- end to end -----

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<byte_len>()
        .register::<double>()
}

/// A service with `adjust` applied to its configuration (listening on the harness's channel).
async fn service_with(adjust: impl FnOnce(&mut ServiceConfig)) -> TestService {
    service_on(MemoryBroker::new(), adjust).await
}

async fn service_on(broker: MemoryBroker, adjust: impl FnOnce(&mut ServiceConfig)) -> TestService {
    let mut config = ServiceConfig::default();
    config.channels = vec![dispatcher_testkit::harness::DEFAULT_CHANNEL.to_owned()];
    config.shutdown_grace = Duration::from_secs(2);
    adjust(&mut config);
    TestService::builder()
        .registry(registry())
        .memory_broker(broker)
        .configure(move |b| b.config(config))
        .start()
        .await
        .expect("service starts")
}

/// Publishes `payload` and returns the Call it became (the next one finished).
async fn rejected(svc: &TestService, payload: &str) -> Call {
    let before = svc.handle().finished_count();
    svc.publish_raw(payload).await;
    let wanted = usize::try_from(before).unwrap() + 1;
    let calls = svc.wait_for_calls(wanted, WAIT).await.unwrap();
    let c = calls.last().unwrap().clone();
    assert_eq!(
        c.outcome,
        Some(Outcome::Rejected),
        "payload {:?} gave {c:?}",
        preview(payload)
    );
    c
}

fn preview(s: &str) -> String {
    s.chars().take(100).collect()
}

/// A normal task still runs fine (however many other Calls are still being recorded).
async fn still_works(svc: &TestService) {
    let p = svc.publisher().publish(double::call(21)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let calls = svc.history();
        if calls.iter().any(|c| c.uuid == p.uuid()) {
            assert_history(&calls)
                .has(call().uuid(p.uuid()).outcome(Outcome::Ok).result(json!(42)));
            return;
        }
        assert!(Instant::now() < deadline, "the normal task did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(svc: &TestService) -> Value {
    svc.handle()
        .control("metrics", Map::new())
        .await
        .expect("metrics")
}

/// Records WARN events of the current thread (the service loop runs there in a current-thread
/// runtime): `message key=value ...` per event.
#[derive(Clone, Default)]
struct WarnCapture {
    events: Arc<Mutex<Vec<String>>>,
    next_span: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for WarnCapture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_span() || *metadata.level() == tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut line = String::new();
            event.record(&mut Fields(&mut line));
            self.events.lock().unwrap().push(line);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Malformed, deeply nested, oversized-number and mistyped payloads: each one is a `rejected`
/// Call whose error names the problem, logged at warn with the reason.
#[tokio::test]
async fn malformed_payloads_are_rejected_with_a_reason() {
    let capture = WarnCapture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let svc = service_with(|_| {}).await;
    let deep_args = format!(
        r#"{{"task": "t.double", "args": [{}1{}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_kwargs = format!(
        r#"{{"task": "t.double", "kwargs": {{"x": {}}}}}"#,
        "{\"a\":".repeat(20_000) + "1" + &"}".repeat(20_000)
    );
    let long_task = json!({"task": "t".repeat(MAX_TASK_NAME + 1)}).to_string();
    let long_uuid =
        json!({"task": "t.double", "args": [1], "uuid": "u".repeat(MAX_ID_LEN + 1)}).to_string();
    let cases: Vec<(String, &[&str])> = vec![
        // Not JSON, or not a message.
        (r#"{"task": "t.double", "args": ["#.into(), &["malformed message", "invalid JSON", "EOF"]),
        ("{".into(), &["invalid JSON"]),
        ("}{".into(), &["not a bare task name"]),
        ("[1, 2]".into(), &["not a JSON object and not a bare task name"]),
        // Bare words are task names (docs/WIRE.md), so these are unknown tasks.
        ("null".into(), &["unknown task \"null\""]),
        ("42".into(), &["unknown task \"42\""]),
        ("\"\"".into(), &["not a bare task name"]),
        ("\"unterminated".into(), &["invalid JSON string"]),
        ("   ".into(), &["empty payload"]),
        ("\u{0}\u{1}\u{7f}".into(), &["not a bare task name"]),
        (r#"{"args": [1]}"#.into(), &["neither `task` nor `control`"]),
        (r#"{"task": "t.double", "control": "alive"}"#.into(), &["both `task` and `control`"]),
        (r#"{"task": "t.double", "task": "t.double"}"#.into(), &["duplicate field `task`"]),
        // Deep nesting: refused by the parser's recursion limit, no stack overflow.
        (deep_args, &["invalid JSON", "recursion limit exceeded"]),
        (deep_kwargs, &["invalid JSON", "recursion limit exceeded"]),
        ("[".repeat(100_000), &["not a JSON object and not a bare task name"]),
        // Huge numbers.
        (r#"{"task": "t.double", "args": [1e400]}"#.into(), &["invalid JSON", "number out of range"]),
        (r#"{"task": "t.double", "kwargs": {"x": -1e400}}"#.into(), &["number out of range"]),
        (
            r#"{"task": "t.double", "args": [1180591620717411303424]}"#.into(),
            &["t.double", "argument `x`", "expected i64"],
        ),
        (
            r#"{"task": "t.double", "args": [-1180591620717411303424]}"#.into(),
            &["t.double", "argument `x`", "expected i64"],
        ),
        (
            r#"{"task": "t.double", "args": [18446744073709551615]}"#.into(),
            &["t.double", "argument `x`", "expected i64"],
        ),
        (r#"{"task": "t.double", "args": [1.5]}"#.into(), &["argument `x`", "expected i64"]),
        (r#"{"task": "t.double", "args": [1], "delay": 1e300}"#.into(), &["delay", "max_delay"]),
        (r#"{"task": "t.double", "args": [1], "time_pub": 1e400}"#.into(), &["number out of range"]),
        // Wrong types.
        (r#"{"task": 5}"#.into(), &["invalid type: integer `5`, expected a string"]),
        (r#"{"task": ["t.double"]}"#.into(), &["invalid type"]),
        (r#"{"task": "t.double", "args": "two"}"#.into(), &["invalid type", "expected a sequence"]),
        (r#"{"task": "t.double", "kwargs": [1]}"#.into(), &["invalid type", "expected a map"]),
        (r#"{"task": "t.double", "args": ["two"]}"#.into(), &["argument `x`", "invalid type: string \"two\""]),
        (r#"{"task": "t.double", "args": [null]}"#.into(), &["argument `x`"]),
        (r#"{"task": "t.double", "args": [1, 2]}"#.into(), &["takes 1 argument (x) but 2"]),
        (r#"{"task": "t.double", "kwargs": {"y": 1}}"#.into(), &["unexpected argument `y`"]),
        (r#"{"task": "t.double"}"#.into(), &["missing argument `x`"]),
        (r#"{"task": "t.double", "args": [1], "delay": "soon"}"#.into(), &["invalid type", "expected f64"]),
        (r#"{"task": "t.double", "args": [1], "delay": -1}"#.into(), &["field `delay`"]),
        (r#"{"task": "t.double", "args": [1], "uuid": 7}"#.into(), &["invalid type"]),
        (long_task, &["field `task` must be 1 to 255 bytes"]),
        (long_uuid, &["field `uuid`", "at most 128"]),
        (r#"{"task": "no.such.task"}"#.into(), &["unknown task \"no.such.task\""]),
        // Envelopes that are not valid.
        (
            r#"{"__dispatcherd_chunk__": "v9", "message_id": "m", "index": 0, "total": 2, "payload": "x"}"#.into(),
            &["unsupported chunk envelope version"],
        ),
        (
            r#"{"__dispatcherd_chunk__": "v1", "message_id": "m", "index": 0}"#.into(),
            &["lacks one of"],
        ),
        (
            r#"{"__dispatcherd_chunk__": "v1", "message_id": "m", "index": -1, "total": 2, "payload": "x"}"#.into(),
            &["invalid value"],
        ),
        (
            r#"{"__dispatcherd_chunk__": "v1", "message_id": "m", "index": 3, "total": 2, "payload": "x"}"#.into(),
            &["index 3 is not below total 2"],
        ),
        (
            r#"{"__dispatcherd_chunk__": "v1", "message_id": "", "index": 0, "total": 2, "payload": "x"}"#.into(),
            &["message_id must be 1 to 128 bytes"],
        ),
        (
            r#"{"__dispatcherd_chunk__": "v1", "message_id": "m", "index": 0, "total": 18446744073709551615, "payload": "x"}"#.into(),
            &["total of 18446744073709551615 pieces is out of range"],
        ),
        (
            r#"{"__dispatcherd_chunk__": "v1", "message_id": "m", "index": 0, "total": 1, "payload": "{\"__dispatcherd_chunk__\": \"v1\", \"message_id\": \"n\", \"index\": 0, \"total\": 1, \"payload\": \"t.double\"}"}"#.into(),
            &["a chunk envelope inside a chunked message"],
        ),
    ];
    let n = cases.len();
    for (payload, wanted) in &cases {
        let c = rejected(&svc, payload).await;
        let error = c.error.clone().unwrap_or_default();
        for w in *wanted {
            assert!(
                error.contains(w),
                "payload {:?}: error {error:?} lacks {w:?}",
                preview(payload)
            );
        }
        assert!(error.len() < 1000, "error of {} bytes", error.len());
    }
    still_works(&svc).await;
    let m = metrics(&svc).await;
    assert_eq!(m["finished"]["rejected"], json!(n), "{m}");
    assert_eq!(m["received"], json!(n + 1), "{m}");

    // Each rejection was logged at warn once, with its kind and its reason.
    let logged = capture.events.lock().unwrap().clone();
    let rejections: Vec<&String> = logged
        .iter()
        .filter(|l| l.contains("outcome=rejected"))
        .collect();
    assert_eq!(rejections.len(), n, "{logged:#?}");
    for (line, (_, wanted)) in rejections.iter().zip(&cases) {
        assert!(line.contains("reason="), "{line}");
        assert!(
            line.contains(wanted[0].trim_matches('"')),
            "{line} lacks {:?}",
            wanted[0]
        );
    }
    svc.shutdown().await;
}

/// A one-megabyte argument travels in chunks (through the publisher and as raw text), including
/// characters that need escaping, and the task runs.
#[tokio::test]
async fn megabyte_arguments_in_chunks_run() {
    let svc = service_with(|_| {}).await;
    let text: String = "ab\"\\é\u{1}\n€😀x".repeat(1_000_000 / 16 + 1);
    let p = svc
        .publisher()
        .publish(byte_len::call(text.clone()))
        .await
        .unwrap();
    let raw = json!({"task": "hostile.len", "args": [text], "uuid": "raw-megabyte"}).to_string();
    assert!(raw.len() > 1_000_000);
    svc.publish_raw(&raw).await;
    let calls = svc.wait_for_calls(2, WAIT).await.unwrap();
    assert_history(&calls)
        .has(
            call()
                .uuid(p.uuid())
                .outcome(Outcome::Ok)
                .result(json!(text.len())),
        )
        .has(
            call()
                .uuid("raw-megabyte")
                .outcome(Outcome::Ok)
                .result(json!(text.len())),
        );
    assert_eq!(metrics(&svc).await["partial_chunked_messages"], json!(0));
    svc.shutdown().await;
}

/// Splits `payload` into decoded envelopes of at most `max` bytes each.
fn pieces(payload: &str, max: usize) -> Vec<String> {
    let p = split(payload, max).unwrap();
    assert!(p.len() > 2, "{} pieces", p.len());
    p
}

fn message_id(piece: &str) -> String {
    match decode(piece) {
        Ok((Decoded::Chunk(e), _)) => e.message_id,
        other => panic!("not a chunk: {other:?}"),
    }
}

/// A chunked message with a missing piece is rejected when it expires; so is one announcing a
/// million pieces (which costs nothing while it waits); a `total` beyond any payload is
/// rejected at once.
#[tokio::test]
async fn incomplete_chunked_messages_expire_as_rejections() {
    let svc = service_with(|c| c.chunks.expiry = Duration::from_secs(1)).await;
    let bus = svc.broker().clone();
    let ch = svc.channel().to_owned();
    let payload = json!({"task": "hostile.len", "args": ["y".repeat(30_000)]}).to_string();
    let mut p = pieces(&payload, 8000);
    let id = message_id(&p[0]);
    let total = p.len();
    p.remove(1);
    for piece in &p {
        bus.publish(&ch, piece).await.unwrap();
    }
    let million = json!({"__dispatcherd_chunk__": "v1", "message_id": "million", "index": 999_999,
        "total": 1_000_000, "payload": "x"})
    .to_string();
    bus.publish(&ch, &million).await.unwrap();
    let huge = json!({"__dispatcherd_chunk__": "v1", "message_id": "huge", "index": 0,
        "total": 1_000_000_000_000u64, "payload": "x"})
    .to_string();
    let c = rejected(&svc, &huge).await;
    assert!(
        c.error.as_deref().unwrap().contains("out of range"),
        "{c:?}"
    );
    assert_eq!(metrics(&svc).await["partial_chunked_messages"], json!(2));

    let start = Instant::now();
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    // Expiry is checked once a second.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_history(&calls)
        .has(call().outcome(Outcome::Rejected).error_contains(&format!(
            "chunked message {id} expired with {} of {total} pieces received",
            total - 1
        )))
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("chunked message million expired with 1 of 1000000 pieces"),
        )
        .has_none(call().outcome(Outcome::Ok));
    assert_eq!(metrics(&svc).await["partial_chunked_messages"], json!(0));
    still_works(&svc).await;
    svc.shutdown().await;
}

/// Two chunked messages interleaved both assemble; a duplicate piece is rejected (the first one
/// kept, so its message still runs); a piece changing `total` drops its message, and a later
/// piece of that id cannot revive it silently.
#[tokio::test]
async fn interleaved_duplicate_and_inconsistent_chunks() {
    let svc = service_with(|c| c.chunks.expiry = Duration::from_millis(500)).await;
    let bus = svc.broker().clone();
    let ch = svc.channel().to_owned();
    let a =
        json!({"task": "hostile.len", "args": ["a".repeat(20_000)], "uuid": "msg-a"}).to_string();
    let b =
        json!({"task": "hostile.len", "args": ["b".repeat(25_000)], "uuid": "msg-b"}).to_string();
    let pa = pieces(&a, 4000);
    let pb = pieces(&b, 4000);
    let mut order = Vec::new();
    for i in 0..pa.len().max(pb.len()) {
        if let Some(x) = pb.get(i) {
            order.push(x.clone());
        }
        if let Some(x) = pa.get(i) {
            order.push(x.clone());
            if i == 1 {
                order.push(x.clone()); // a duplicate of A's piece 1
            }
        }
    }
    for piece in &order {
        bus.publish(&ch, piece).await.unwrap();
    }
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    assert_history(&calls)
        .has(
            call()
                .uuid("msg-a")
                .outcome(Outcome::Ok)
                .result(json!(20_000)),
        )
        .has(
            call()
                .uuid("msg-b")
                .outcome(Outcome::Ok)
                .result(json!(25_000)),
        )
        .has(call().outcome(Outcome::Rejected).error_contains(&format!(
            "chunked message {}: duplicate piece 1; the first one is kept",
            message_id(&pa[1])
        )))
        .count(3);

    // A piece that changes `total` drops what was collected, and says so.
    let c =
        json!({"task": "hostile.len", "args": ["c".repeat(20_000)], "uuid": "msg-c"}).to_string();
    let pc = pieces(&c, 4000);
    let cid = message_id(&pc[0]);
    bus.publish(&ch, &pc[0]).await.unwrap();
    let liar = json!({"__dispatcherd_chunk__": "v1", "message_id": cid, "index": 0, "total": 1,
        "payload": "t.double"})
    .to_string();
    let r = rejected(&svc, &liar).await;
    assert!(
        r.error.as_deref().unwrap().contains("earlier pieces said")
            && r.error.as_deref().unwrap().contains("message dropped"),
        "{r:?}"
    );
    assert_eq!(metrics(&svc).await["partial_chunked_messages"], json!(0));
    // The rest of it arrives, cannot complete, and expires as a rejection of its own.
    for piece in &pc[1..] {
        bus.publish(&ch, piece).await.unwrap();
    }
    let calls = svc.wait_for_calls(5, WAIT).await.unwrap();
    assert_history(&calls)
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains(&format!("chunked message {cid} expired")),
        )
        .has_none(call().uuid("msg-c"));
    still_works(&svc).await;
    svc.shutdown().await;
}

/// Payloads over `max_payload_bytes`, whole or assembled from chunks, are rejected naming the
/// size and the limit.
#[tokio::test]
async fn oversized_payloads_are_rejected() {
    const LIMIT: usize = 64 * 1024;
    let bus = MemoryBroker::new().with_max_payload(None);
    let svc = service_on(bus.clone(), |c| {
        c.chunks.max_payload_bytes = LIMIT;
        c.chunks.expiry = Duration::from_millis(500);
    })
    .await;
    let ch = svc.channel().to_owned();
    let big = json!({"task": "hostile.len", "args": ["z".repeat(100_000)]}).to_string();
    let c = rejected(&svc, &big).await;
    assert_eq!(
        c.error.as_deref(),
        Some(
            format!(
                "payload of {} bytes exceeds the limit of {LIMIT} bytes",
                big.len()
            )
            .as_str()
        )
    );
    // The same in chunks: dropped once it would exceed the limit.
    let p = pieces(&big, 8000);
    let id = message_id(&p[0]);
    for piece in &p {
        bus.publish(&ch, piece).await.unwrap();
    }
    // The rest after the drop start again, and expire: every piece is accounted for.
    let deadline = Instant::now() + WAIT;
    loop {
        let m = metrics(&svc).await;
        if m["partial_chunked_messages"] == json!(0) && svc.handle().finished_count() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_history(&svc.history())
        .has(call().outcome(Outcome::Rejected).error_contains(&format!(
            "chunked message {id}: assembled payload would reach"
        )))
        .has(
            call().outcome(Outcome::Rejected).error_contains(
                "over the limit of 65536 bytes (max_payload_bytes); message dropped",
            ),
        )
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains(&format!("chunked message {id} expired")),
        )
        .has_none(call().outcome(Outcome::Ok));
    still_works(&svc).await;
    svc.shutdown().await;
}

/// 5,000 pieces of messages that never complete, with room for 100 partials: at most 100 are
/// held, every other piece is a rejection saying why, and the held ones expire as rejections.
#[tokio::test]
async fn partial_flood_stays_bounded() {
    let svc = service_with(|c| {
        c.chunks.max_partials = 100;
        c.chunks.expiry = Duration::from_secs(2);
    })
    .await;
    let bus = svc.broker().clone();
    let ch = svc.channel().to_owned();
    let batch: Vec<(String, String)> = (0..5_000)
        .map(|i| {
            let env = json!({"__dispatcherd_chunk__": "v1", "message_id": format!("flood-{i}"),
                "index": 0, "total": 3, "payload": "x".repeat(100)});
            (ch.clone(), env.to_string())
        })
        .collect();
    bus.publish_batch(&batch).await.unwrap();
    let calls = svc.wait_for_calls(4_900, WAIT).await.unwrap();
    let m = metrics(&svc).await;
    assert!(
        m["partial_chunked_messages"].as_u64().unwrap() <= 100,
        "{m}"
    );
    assert_history(&calls).has_exactly(
        4_900,
        call().outcome(Outcome::Rejected).error_contains(
            "100 partial messages are already being assembled (limit max_partials = 100)",
        ),
    );
    // The 100 held expire: all 5,000 accounted for, nothing held.
    let calls = svc.wait_for_calls(5_000, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(
        100,
        call()
            .outcome(Outcome::Rejected)
            .error_contains("expired with 1 of 3"),
    );
    let m = metrics(&svc).await;
    assert_eq!(m["partial_chunked_messages"], json!(0), "{m}");
    assert_eq!(m["finished"]["rejected"], json!(5_000), "{m}");
    still_works(&svc).await;
    svc.shutdown().await;
}

/// A subscription to a fresh reply channel on the service's bus.
async fn reply_channel(svc: &TestService) -> (String, dispatcher_core::Subscription) {
    let name = format!("reply_to_{}", uuid::Uuid::new_v4().simple());
    let sub = svc
        .broker()
        .subscribe(std::slice::from_ref(&name))
        .await
        .unwrap();
    (name, sub)
}

async fn next_reply(sub: &mut dispatcher_core::Subscription) -> Value {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a reply in time")
        .expect("subscription open");
    serde_json::from_str(&msg.payload).unwrap()
}

/// Control commands with unknown names or data of the wrong shape get an error reply (over the
/// broker and locally), and the service keeps answering.
#[tokio::test]
async fn bad_control_commands_get_error_replies() {
    let svc = service_with(|_| {}).await;
    let node = svc.handle().node_id().to_owned();
    let (r, mut replies) = reply_channel(&svc).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"control": "frobnicate", "reply_to": r}),
            "No control method frobnicate",
        ),
        (json!({"control": "", "reply_to": r}), "No control method "),
        // Data of the wrong shape: refused by the decoder, answered all the same.
        (
            json!({"control": "running", "control_data": [1], "reply_to": r}),
            "field `control_data` must be an object, got an array",
        ),
        (
            json!({"control": "history", "control_data": "limit", "reply_to": r}),
            "field `control_data` must be an object, got a string",
        ),
        (
            json!({"control": 5, "reply_to": r}),
            "invalid type: integer `5`, expected a string",
        ),
        (
            json!({"control": "alive", "task": "t.double", "reply_to": r}),
            "both `task` and `control`",
        ),
        // Data of the right shape with wrong contents: the command says what is wrong.
        (
            json!({"control": "history", "control_data": {"limit": "ten"}, "reply_to": r}),
            "bad history filter \"limit\" = \"ten\"",
        ),
        (
            json!({"control": "history", "control_data": {"limit": -1}, "reply_to": r}),
            "bad history filter \"limit\"",
        ),
        (
            json!({"control": "history", "control_data": {"outcome": "weird"}, "reply_to": r}),
            "unknown outcome \"weird\"",
        ),
        (
            json!({"control": "history", "control_data": {"task": 5}, "reply_to": r}),
            "bad history filter \"task\"",
        ),
        (
            json!({"control": "running", "control_data": {"bogus": 1}, "reply_to": r}),
            "unknown filter field \"bogus\"",
        ),
        (
            json!({"control": "cancel", "control_data": {"bogus": 1}, "reply_to": r}),
            "unknown filter field \"bogus\"",
        ),
        (
            json!({"control": "set_log_level", "control_data": {"level": 5}, "reply_to": r}),
            // Either complaint is right: the level is not a string, and this service has no log
            // level control.
            "set_log_level needs control_data|no log level control",
        ),
        (
            json!({"control": "run", "control_data": {"task": 5}, "reply_to": r}),
            "control_data is not a task message",
        ),
        (
            json!({"control": "run", "control_data": {"task": "t.double", "args": ["x"]}, "reply_to": r}),
            "argument `x`",
        ),
        (
            json!({"control": "run", "control_data": {"task": "no.such"}, "reply_to": r}),
            "unknown task",
        ),
    ];
    for (msg, wanted) in &cases {
        svc.publish_raw(&msg.to_string()).await;
        let reply = next_reply(&mut replies).await;
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(
            wanted.split('|').any(|w| error.contains(w)),
            "{msg}: reply {reply} lacks {wanted:?}"
        );
        assert_eq!(reply["node_id"], json!(node), "{reply}");
    }
    // The undecodable ones are rejected Calls too (the run ones are rejected tasks).
    let calls = svc.wait_for_calls(6, WAIT).await.unwrap();
    assert_history(&calls)
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("control_data"),
        )
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("argument `x`"),
        )
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("unknown task"),
        );

    // The same over the handle.
    let h = svc.handle();
    let e = h
        .control(
            "history",
            json!({"limit": "ten"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("bad history filter"),
        "{e}"
    );
    let e = h.control("no_such_command", Map::new()).await.unwrap();
    assert_eq!(e["error"], json!("No control method no_such_command"));

    // A reply channel that cannot exist: the reply fails (logged), the service goes on.
    let long_reply = "r".repeat(200);
    svc.publish_raw(&json!({"control": "alive", "reply_to": long_reply}).to_string())
        .await;
    svc.publish_raw(&json!({"control": "alive", "reply_to": r}).to_string())
        .await;
    let reply = next_reply(&mut replies).await;
    assert_eq!(reply, json!({"node_id": node}));
    still_works(&svc).await;
    svc.shutdown().await;
}

/// Channel names too long, empty or with NUL are refused naming the channel; quotes are fine.
#[tokio::test]
async fn channel_names_are_checked_and_quotes_allowed() {
    let bus = MemoryBroker::new();
    let long = "c".repeat(64);
    let bad: Vec<(&str, &str)> = vec![
        (&long, "it is longer than 63 bytes"),
        ("", "it is empty"),
        ("nul\0here", "NUL"),
    ];
    for (name, why) in &bad {
        let e = broker::send(&bus, name, "t.double")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid channel name") && e.contains(why), "{e}");
        assert!(
            e.contains(&format!("{name:?}")),
            "{e} does not name {name:?}"
        );
        let e = Publisher::new(Arc::new(bus.clone()), *name)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
        let e = TestService::builder()
            .registry(registry())
            .channel(name)
            .start()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
        let p = Publisher::new(Arc::new(bus.clone()), "fine").unwrap();
        let e = p
            .publish(double::call(1).channel(*name))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
    // 63 bytes with quotes of both kinds, spaces and a semicolon: listened on and published to.
    let mut odd = String::from("we\"ird 'chan'; drop table \"x\"; --");
    while odd.len() < 63 {
        odd.push('x');
    }
    assert_eq!(odd.len(), 63);
    let svc = TestService::builder()
        .registry(registry())
        .channel(&odd)
        .start()
        .await
        .unwrap();
    let p = svc.publisher().publish(double::call(4)).await.unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_history(&calls).has(
        call()
            .uuid(p.uuid())
            .channel(&odd)
            .outcome(Outcome::Ok)
            .result(json!(8)),
    );
    svc.shutdown().await;
}

/// Everything at once, in one service: afterwards a normal task runs, nothing is held or
/// waiting, and every message taken in ended as exactly one Call.
#[tokio::test]
async fn barrage_then_business_as_usual() {
    let svc = service_with(|c| {
        c.chunks.max_partials = 50;
        c.chunks.max_buffered_bytes = 64 * 1024;
        c.chunks.expiry = Duration::from_millis(500);
    })
    .await;
    let bus = svc.broker().clone();
    let ch = svc.channel().to_owned();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..3_000u64 {
        let payload = match next() % 7 {
            0 => "{\"task\": [".repeat((next() % 50) as usize),
            1 => json!({"task": "t.double", "args": [format!("{i}")]}).to_string(),
            2 => json!({"__dispatcherd_chunk__": "v1", "message_id": format!("b{}", next() % 80),
                "index": next() % 4, "total": 1 + next() % 4, "payload": "x".repeat((next() % 3000) as usize)})
            .to_string(),
            3 => json!({"control": "history", "control_data": {"limit": "ten"}}).to_string(),
            4 => format!(
                "{{\"task\": \"t.double\", \"args\": [{}]}}",
                "9".repeat(1 + (next() % 40) as usize)
            ),
            5 => json!({"control": ["running"], "control_data": [1]}).to_string(),
            _ => String::from_utf8_lossy(&next().to_le_bytes()).into_owned(),
        };
        bus.publish(&ch, &payload).await.unwrap();
    }
    still_works(&svc).await;
    // Partials expire; then nothing is held.
    let deadline = Instant::now() + WAIT;
    loop {
        let m = metrics(&svc).await;
        if m["partial_chunked_messages"] == json!(0) && m["waiting"] == json!(0) {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    still_works(&svc).await;
    let m = metrics(&svc).await;
    let finished: u64 = m["finished"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(m["received"].as_u64(), Some(finished), "{m}");
    assert!(m["finished"]["rejected"].as_u64().unwrap() > 500, "{m}");
    assert!(m["finished"]["ok"].as_u64().unwrap() >= 2, "{m}");
    svc.shutdown().await;
}

// ----- soak: the fuzz target's checks on stable, over a million generated inputs -----

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Well-formed payloads to start from, and tokens to splice in.
const SEEDS: &[&str] = &[
    r#"{"task": "hostile.len", "uuid": "9760671a", "args": ["xy"], "time_pub": 1727354869.5, "guid": "8f88", "delay": 0.5, "timeout": 5}"#,
    r#"{"task": "t.double", "kwargs": {"x": 4}}"#,
    r#"{"control": "running", "control_data": {"task": "t.double"}, "reply_to": "reply_to_3f2a"}"#,
    r#"{"__dispatcherd_chunk__": "v1", "message_id": "m1", "index": 1, "total": 3, "payload": "\"args\": [\"xy"}"#,
    r#"{"__dispatcherd_chunk__": "v1", "message_id": "m1", "index": 0, "total": 3, "payload": "{\"task\": \"hostile.len\", "}"#,
    r#"{"__dispatcherd_chunk__": "v1", "message_id": "m1", "index": 2, "total": 3, "payload": "z\"]}"}"#,
    "hostile.len",
    "\"t.double\"",
];
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\n",
    "null",
    "1e400",
    "-1",
    "18446744073709551615",
    "\"task\"",
    "\"control\"",
    "\"args\"",
    "\"kwargs\"",
    "\"index\"",
    "\"total\"",
    "\"payload\"",
    "\"message_id\"",
    "\"__dispatcherd_chunk__\"",
    "\"v1\"",
    "é",
    "😀",
];

/// One generated input: a few seeds, mutated, one per line.
fn generate(rng: &mut Rng) -> String {
    let mut lines = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let mut s: Vec<u8> = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
        for _ in 0..rng.below(6) {
            let at = rng.below(s.len() + 1);
            match rng.below(5) {
                0 => {
                    if at < s.len() {
                        s[at] ^= 1 << rng.below(8);
                    }
                }
                1 => {
                    let end = (at + rng.below(16)).min(s.len());
                    s.drain(at..end);
                }
                2 => {
                    let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                    s.splice(at..at, t.iter().copied());
                }
                3 => {
                    let digits = (rng.next() % 100_000).to_string();
                    s.splice(at..at, digits.bytes());
                }
                _ => s.truncate(at),
            }
        }
        lines.push(String::from_utf8_lossy(&s).into_owned());
    }
    lines.join("\n")
}

/// The checks of `fuzz/src/lib.rs`'s `decode_and_assemble` on one input.
fn decode_and_assemble(text: &str, registry: &TaskRegistry) {
    use dispatcher_core::Registry;
    let limits = AssemblerLimits {
        max_partials: 4,
        max_payload_bytes: 4096,
        max_buffered_bytes: 2048,
        expiry: Duration::from_secs(3),
    };
    let take_in = |payload: &str| {
        if let Ok((Decoded::Task(t), _)) = decode(payload) {
            assert!(!t.task.is_empty() && t.task.len() <= MAX_TASK_NAME);
            if let Some(desc) = registry.lookup(&t.task) {
                if let Err(e) = desc.bind(t.args, t.kwargs) {
                    assert!(e.to_string().contains(desc.name()), "{e}");
                }
            }
        }
    };
    take_in(text);
    let mut asm = Assembler::new(limits);
    let mut now = Instant::now();
    for (i, line) in text.split('\n').enumerate() {
        now += Duration::from_millis((line.len() % 7) as u64 * 400);
        match decode(line) {
            Ok((Decoded::Chunk(env), _)) => match asm.push(env, now) {
                Ok(Some(whole)) => {
                    assert!(whole.len() <= limits.max_payload_bytes);
                    take_in(&whole);
                }
                Ok(None) => {}
                Err(e) => assert!(e.to_string().contains("chunk"), "{e}"),
            },
            Ok(_) => take_in(line),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        if i % 3 == 0 {
            asm.expire(now);
        }
        assert!(asm.partial_count() <= limits.max_partials);
        assert!(asm.buffered_bytes() <= limits.max_buffered_bytes);
    }
    asm.expire(now + limits.expiry);
    assert_eq!((asm.partial_count(), asm.buffered_bytes()), (0, 0));
    let max = 256 + text.len() % 512;
    let pieces = split(text, max).unwrap();
    if pieces.len() > 1 {
        let mut asm = Assembler::new(AssemblerLimits::default());
        let mut whole = None;
        for p in pieces.iter().rev() {
            assert!(p.len() < max);
            let Ok((Decoded::Chunk(env), _)) = decode(p) else {
                panic!("not a chunk: {p:?}");
            };
            whole = asm.push(env, Instant::now()).unwrap();
        }
        assert_eq!(whole.as_deref(), Some(text));
    }
}

/// The fuzz target's checks over generated inputs, for machines without a nightly toolchain:
/// `cargo test --release -p dispatcher-core --test it soak -- --ignored` (`SOAK_INPUTS` sets
/// how many, default 1,000,000; `SOAK_SEED` the seed).
#[test]
#[ignore = "long: run on demand (see fuzz/README.md)"]
fn soak_decode_and_assemble() {
    let n: u64 = std::env::var("SOAK_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let registry = registry();
    let mut rng = Rng(seed | 1);
    let start = Instant::now();
    for i in 0..n {
        let input = generate(&mut rng);
        let result = std::panic::catch_unwind(|| decode_and_assemble(&input, &registry));
        assert!(result.is_ok(), "input #{i} (seed {seed}) failed: {input:?}");
    }
    eprintln!("soak: {n} inputs in {:?}", start.elapsed());
}
