//! Splitting payloads too large for one notification into chunk envelopes, and assembling them
//! again (`docs/WIRE.md`, Chunks).
//!
//! [`split`] cuts the JSON *text* of a payload into slices whose envelopes each stay under a byte
//! limit. [`Assembler`] collects pieces, possibly interleaved with other messages, and returns the
//! whole payload once every piece arrived. Partial payloads are bounded in number, in bytes and in
//! age; whatever breaks a bound is an error that names it, never a silent drop.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::message::ChunkEnvelope;

/// Payloads of this many bytes or more are sent as chunks by default (PostgreSQL's NOTIFY limit
/// is 8000 bytes).
pub const DEFAULT_MAX_PAYLOAD: usize = 8000;

/// The envelope marker's version.
pub const CHUNK_VERSION: &str = "v1";

/// JSON overhead of an envelope around its slice, with room for 20-digit index and total.
fn envelope_overhead(message_id: &str) -> usize {
    // {"__dispatcherd_chunk__":"v1","message_id":"<id>","index":<20>,"total":<20>,"payload":""}
    r#"{"__dispatcherd_chunk__":"v1","message_id":"","index":,"total":,"payload":""}"#.len()
        + message_id.len()
        + 40
}

/// Bytes a character takes once escaped in a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Splits `payload` into envelopes of fewer than `max_bytes` bytes each.
///
/// A payload shorter than `max_bytes` is returned as it is, in a one-element vector. `max_bytes`
/// below 256 is raised to 256 so that every envelope has room for content.
///
/// ```
/// use dispatcher_core::chunk::{split, Assembler, AssemblerLimits};
/// use dispatcher_core::message::{decode, Decoded};
/// let big = format!(r#"{{"task":"demo.echo","args":["{}"]}}"#, "x".repeat(20_000));
/// let pieces = split(&big, 8000).unwrap();
/// assert!(pieces.len() > 2 && pieces.iter().all(|p| p.len() < 8000));
/// let mut asm = Assembler::new(AssemblerLimits::default());
/// let mut whole = None;
/// for p in &pieces {
///     let Decoded::Chunk(env) = decode(p).unwrap().0 else { panic!() };
///     whole = asm.push(env, std::time::Instant::now()).unwrap();
/// }
/// assert_eq!(whole.as_deref(), Some(big.as_str()));
/// ```
pub fn split(payload: &str, max_bytes: usize) -> Result<Vec<String>> {
    let max_bytes = max_bytes.max(256);
    if payload.len() < max_bytes {
        return Ok(vec![payload.to_owned()]);
    }
    let message_id = uuid::Uuid::new_v4().simple().to_string();
    let budget = max_bytes - 1 - envelope_overhead(&message_id);
    let mut slices: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, c) in payload.char_indices() {
        let n = escaped_len(c);
        if used + n > budget {
            slices.push(&payload[start..i]);
            start = i;
            used = 0;
        }
        used += n;
    }
    if start < payload.len() {
        slices.push(&payload[start..]);
    }
    let total = slices.len() as u64;
    slices
        .into_iter()
        .enumerate()
        .map(|(index, slice)| {
            let env = ChunkEnvelope {
                version: CHUNK_VERSION.to_owned(),
                message_id: message_id.clone(),
                index: index as u64,
                total,
                payload: slice.to_owned(),
            };
            serde_json::to_string(&env).map_err(|source| Error::Serialize {
                what: "chunk envelope".into(),
                source,
            })
        })
        .collect()
}

/// Bounds on partial payloads held by an [`Assembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssemblerLimits {
    /// Most payloads being assembled at once; a piece of a further one is rejected.
    pub max_partials: usize,
    /// Largest payload after assembly, in bytes.
    pub max_payload_bytes: usize,
    /// Most bytes held across all partial payloads, counting [`PIECE_OVERHEAD`] for each piece
    /// on top of its payload (so it should exceed `max_payload_bytes` by a margin).
    pub max_buffered_bytes: usize,
    /// A partial payload older than this is dropped and reported by [`Assembler::expire`].
    pub expiry: Duration,
}

impl Default for AssemblerLimits {
    fn default() -> Self {
        AssemblerLimits {
            max_partials: 1024,
            max_payload_bytes: 16 * 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            expiry: Duration::from_secs(60),
        }
    }
}

/// Bookkeeping bytes charged for each piece held, on top of its payload: a piece with little or
/// no payload still costs a map entry, so many tiny pieces cannot hold memory the byte bound does
/// not see.
pub const PIECE_OVERHEAD: usize = 64;

#[derive(Debug)]
struct Partial {
    total: u64,
    /// Pieces by index. Sparse: a piece announcing a large `index` costs one entry, not `index`.
    pieces: BTreeMap<u64, String>,
    /// Payload bytes received (what the assembled payload will be so far).
    bytes: usize,
    /// What this partial is charged against `max_buffered_bytes` (payload plus per-piece overhead).
    charged: usize,
    first_seen: Instant,
}

/// A partial payload that expired before all its pieces arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The payload's `message_id`.
    pub message_id: String,
    /// Pieces that did arrive.
    pub received: u64,
    /// Pieces announced.
    pub total: u64,
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chunked message {} expired with {} of {} pieces received",
            self.message_id, self.received, self.total
        )
    }
}

/// What an [`Assembler`] has seen, for the `chunks` control command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssemblyStats {
    /// Chunk envelopes taken in (valid or not).
    pub total_chunks_received: u64,
    /// Payloads assembled whole.
    pub successful_assemblies: u64,
    /// Pieces refused (out of range, duplicate, a bound exceeded).
    pub errored_assemblies: u64,
    /// Partial payloads dropped because their pieces did not all arrive in time.
    pub timed_out_assemblies: u64,
    /// Payloads being assembled now.
    pub active_messages: u64,
}

/// One payload being assembled, as the `chunks` control command lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartialStatus {
    /// Seconds since its first piece arrived.
    pub seconds_since_start: Option<f64>,
    /// Pieces announced.
    pub expected_total: Option<u64>,
    /// The pieces held, by index.
    pub chunks: Vec<PieceStatus>,
}

/// One piece held of a partial payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PieceStatus {
    /// The piece's index.
    pub chunk_id: u64,
    /// Its length in characters (as dispatcherd counts).
    pub length: u64,
}

/// Reassembles chunked payloads.
#[derive(Debug)]
pub struct Assembler {
    limits: AssemblerLimits,
    partials: HashMap<String, Partial>,
    buffered: usize,
    stats: AssemblyStats,
}

impl Assembler {
    /// An empty assembler with these limits.
    pub fn new(limits: AssemblerLimits) -> Self {
        Assembler {
            limits,
            partials: HashMap::new(),
            buffered: 0,
            stats: AssemblyStats::default(),
        }
    }

    /// Counts of what this assembler has seen.
    pub fn stats(&self) -> AssemblyStats {
        AssemblyStats {
            active_messages: self.partials.len() as u64,
            ..self.stats
        }
    }

    /// The payloads being assembled now, by message id.
    pub fn partials(&self, now: Instant) -> Vec<(String, PartialStatus)> {
        let mut out: Vec<(String, PartialStatus)> = self
            .partials
            .iter()
            .map(|(id, p)| {
                let status = PartialStatus {
                    seconds_since_start: Some(
                        now.saturating_duration_since(p.first_seen).as_secs_f64(),
                    ),
                    expected_total: Some(p.total),
                    chunks: p
                        .pieces
                        .iter()
                        .map(|(i, s)| PieceStatus {
                            chunk_id: *i,
                            length: s.chars().count() as u64,
                        })
                        .collect(),
                };
                (id.clone(), status)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Payloads being assembled now; never more than `max_partials`.
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// Bytes held in partial payloads now, counting [`PIECE_OVERHEAD`] for each piece; never more
    /// than `max_buffered_bytes`.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    fn drop_partial(&mut self, id: &str) {
        if let Some(p) = self.partials.remove(id) {
            self.buffered -= p.charged;
        }
    }

    /// Adds one piece; returns the whole payload when this was the last missing piece.
    ///
    /// An invalid piece (index out of range, `total` too large or changed, a duplicate index, a
    /// bound exceeded) is an error naming the message id; a piece that breaks a bound of the whole
    /// payload (its size, a changed `total`) also drops what was collected for it, and the error
    /// says so.
    pub fn push(&mut self, env: ChunkEnvelope, now: Instant) -> Result<Option<String>> {
        self.stats.total_chunks_received += 1;
        let result = self.take_piece(env, now);
        match &result {
            Ok(Some(_)) => self.stats.successful_assemblies += 1,
            Ok(None) => {}
            Err(_) => self.stats.errored_assemblies += 1,
        }
        result
    }

    fn take_piece(&mut self, env: ChunkEnvelope, now: Instant) -> Result<Option<String>> {
        let id = env.message_id;
        if id.is_empty() || id.len() > crate::message::MAX_ID_LEN {
            return Err(Error::Chunk(format!(
                "chunk message_id must be 1 to {} bytes, got {}",
                crate::message::MAX_ID_LEN,
                id.len()
            )));
        }
        // A payload of `max_payload_bytes` has at most that many non-empty pieces.
        if env.total == 0 || env.total > self.limits.max_payload_bytes as u64 {
            return Err(Error::Chunk(format!(
                "chunked message {id}: total of {} pieces is out of range 1..={} (max_payload_bytes)",
                env.total, self.limits.max_payload_bytes
            )));
        }
        if env.index >= env.total {
            return Err(Error::Chunk(format!(
                "chunked message {id}: index {} is not below total {}",
                env.index, env.total
            )));
        }
        if let Some(was) = self.partials.get(&id).map(|p| p.total) {
            if was != env.total {
                self.drop_partial(&id);
                return Err(Error::Chunk(format!(
                    "chunked message {id}: piece says total {} but earlier pieces said {was}; message dropped",
                    env.total
                )));
            }
        }
        if self
            .partials
            .get(&id)
            .is_some_and(|p| p.pieces.contains_key(&env.index))
        {
            return Err(Error::Chunk(format!(
                "chunked message {id}: duplicate piece {}; the first one is kept",
                env.index
            )));
        }
        let piece_len = env.payload.len();
        if piece_len > self.limits.max_payload_bytes {
            return Err(Error::Chunk(format!(
                "chunked message {id}: piece {} of {piece_len} bytes exceeds the limit of {} bytes for a payload (max_payload_bytes)",
                env.index, self.limits.max_payload_bytes
            )));
        }
        if env.total == 1 {
            return Ok(Some(env.payload));
        }
        if !self.partials.contains_key(&id) && self.partials.len() >= self.limits.max_partials {
            return Err(Error::Chunk(format!(
                "chunked message {id}: {} partial messages are already being assembled (limit max_partials = {})",
                self.partials.len(),
                self.limits.max_partials
            )));
        }
        let cost = piece_len + PIECE_OVERHEAD;
        if self.buffered + cost > self.limits.max_buffered_bytes {
            return Err(Error::Chunk(format!(
                "chunked message {id}: buffering piece {} ({piece_len} bytes) would exceed the limit of {} bytes held for partial messages (max_buffered_bytes)",
                env.index, self.limits.max_buffered_bytes
            )));
        }
        let max_payload = self.limits.max_payload_bytes;
        let partial = self.partials.entry(id.clone()).or_insert_with(|| Partial {
            total: env.total,
            pieces: BTreeMap::new(),
            bytes: 0,
            charged: 0,
            first_seen: now,
        });
        if partial.bytes + piece_len > max_payload {
            let size = partial.bytes + piece_len;
            self.drop_partial(&id);
            return Err(Error::Chunk(format!(
                "chunked message {id}: assembled payload would reach {size} bytes, over the limit of {max_payload} bytes (max_payload_bytes); message dropped"
            )));
        }
        partial.pieces.insert(env.index, env.payload);
        partial.bytes += piece_len;
        partial.charged += cost;
        self.buffered += cost;
        if (partial.pieces.len() as u64) < partial.total {
            return Ok(None);
        }
        let bytes = partial.bytes;
        let pieces = std::mem::take(&mut partial.pieces);
        self.drop_partial(&id);
        let mut whole = String::with_capacity(bytes);
        for p in pieces.into_values() {
            whole.push_str(&p);
        }
        Ok(Some(whole))
    }

    /// Drops partial payloads older than the expiry and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let expiry = self.limits.expiry;
        let old: Vec<String> = self
            .partials
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.first_seen) >= expiry)
            .map(|(id, _)| id.clone())
            .collect();
        old.into_iter()
            .filter_map(|id| {
                let p = self.partials.get(&id)?;
                let e = Expired {
                    message_id: id.clone(),
                    received: p.pieces.len() as u64,
                    total: p.total,
                };
                self.drop_partial(&id);
                self.stats.timed_out_assemblies += 1;
                Some(e)
            })
            .collect()
    }

    /// The earliest instant at which a partial payload expires, if any is held.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.partials
            .values()
            .map(|p| p.first_seen + self.limits.expiry)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode, Decoded};
    use proptest::prelude::*;

    fn envelopes(pieces: &[String]) -> Vec<ChunkEnvelope> {
        pieces
            .iter()
            .map(|p| match decode(p) {
                Ok((Decoded::Chunk(e), _)) => e,
                other => panic!("not a chunk: {other:?}"),
            })
            .collect()
    }

    fn env(id: &str, index: u64, total: u64, payload: &str) -> ChunkEnvelope {
        ChunkEnvelope {
            version: "v1".into(),
            message_id: id.into(),
            index,
            total,
            payload: payload.into(),
        }
    }

    proptest! {
        #[test]
        fn split_then_assemble_in_any_order(text in "\\PC{0,3000}|[\"\\\\\u{0}-\u{1f}a]{0,3000}", max in 256usize..2000, seed in any::<u64>()) {
            let payload = serde_json::to_string(&serde_json::json!({"task": "t", "args": [text]})).unwrap();
            let pieces = split(&payload, max).unwrap();
            for p in &pieces { prop_assert!(p.len() < max.max(256), "piece of {} bytes", p.len()); }
            if pieces.len() == 1 { prop_assert_eq!(&pieces[0], &payload); return Ok(()); }
            let mut envs = envelopes(&pieces);
            // deterministic shuffle
            let mut s = seed;
            for i in (1..envs.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                envs.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut asm = Assembler::new(AssemblerLimits::default());
            let now = Instant::now();
            let n = envs.len();
            for (k, e) in envs.into_iter().enumerate() {
                let out = asm.push(e, now).unwrap();
                if k + 1 < n { prop_assert!(out.is_none()); } else { prop_assert_eq!(out.as_deref(), Some(payload.as_str())); }
            }
            prop_assert_eq!(asm.partial_count(), 0);
            prop_assert_eq!(asm.buffered_bytes(), 0);
        }

        #[test]
        fn interleaved_messages_assemble_independently(a in "[a-z]{500,2000}", b in "[0-9]{500,2000}") {
            let pa = split(&a, 300).unwrap();
            let pb = split(&b, 300).unwrap();
            let (ea, eb) = (envelopes(&pa), envelopes(&pb));
            let mut asm = Assembler::new(AssemblerLimits::default());
            let now = Instant::now();
            let mut done = Vec::new();
            let mut ia = ea.into_iter();
            let mut ib = eb.into_iter();
            loop {
                let (x, y) = (ia.next(), ib.next());
                if x.is_none() && y.is_none() { break; }
                for e in [x, y].into_iter().flatten() {
                    if let Some(w) = asm.push(e, now).unwrap() { done.push(w); }
                }
            }
            done.sort();
            let mut want = vec![a, b];
            want.sort();
            prop_assert_eq!(done, want);
        }
    }

    #[test]
    fn small_payload_is_not_wrapped() {
        assert_eq!(
            split("{\"task\":\"t\"}", 8000).unwrap(),
            vec!["{\"task\":\"t\"}"]
        );
    }

    #[test]
    fn missing_piece_expires() {
        let mut asm = Assembler::new(AssemblerLimits {
            expiry: Duration::from_secs(5),
            ..AssemblerLimits::default()
        });
        let t0 = Instant::now();
        assert_eq!(asm.push(env("m", 0, 3, "ab"), t0).unwrap(), None);
        assert_eq!(asm.push(env("m", 2, 3, "cd"), t0).unwrap(), None);
        assert!(asm.expire(t0 + Duration::from_secs(1)).is_empty());
        let gone = asm.expire(t0 + Duration::from_secs(6));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].received, gone[0].total), (2, 3));
        assert_eq!(asm.buffered_bytes(), 0);
        assert!(gone[0].to_string().contains("2 of 3"));
    }

    #[test]
    fn absurd_total_and_bad_index_are_rejected() {
        let mut asm = Assembler::new(AssemblerLimits {
            max_payload_bytes: 1000,
            ..AssemblerLimits::default()
        });
        let now = Instant::now();
        let e = asm.push(env("m", 0, 1_000_000, "x"), now).unwrap_err();
        assert!(e.to_string().contains("1000000"), "{e}");
        assert!(asm.push(env("m", 5, 3, "x"), now).is_err());
        assert_eq!(asm.partial_count(), 0);
    }

    #[test]
    fn duplicate_index_keeps_first() {
        let mut asm = Assembler::new(AssemblerLimits::default());
        let now = Instant::now();
        asm.push(env("m", 0, 2, "ab"), now).unwrap();
        let e = asm.push(env("m", 0, 2, "zz"), now).unwrap_err();
        assert!(e.to_string().contains("duplicate piece 0"), "{e}");
        assert_eq!(
            asm.push(env("m", 1, 2, "cd"), now).unwrap().as_deref(),
            Some("abcd")
        );
    }

    #[test]
    fn changed_total_drops_message() {
        let mut asm = Assembler::new(AssemblerLimits::default());
        let now = Instant::now();
        asm.push(env("m", 0, 3, "ab"), now).unwrap();
        assert!(asm.push(env("m", 1, 4, "cd"), now).is_err());
        assert_eq!(asm.partial_count(), 0);
    }

    #[test]
    fn partial_count_and_bytes_are_bounded() {
        let mut asm = Assembler::new(AssemblerLimits {
            max_partials: 2,
            max_buffered_bytes: 2 * PIECE_OVERHEAD + 10,
            ..AssemblerLimits::default()
        });
        let now = Instant::now();
        asm.push(env("a", 0, 2, "1234"), now).unwrap();
        asm.push(env("b", 0, 2, "1234"), now).unwrap();
        let e = asm.push(env("c", 0, 2, "1"), now).unwrap_err();
        assert!(e.to_string().contains("max_partials = 2"), "{e}");
        let e = asm.push(env("a", 1, 2, "123"), now).unwrap_err();
        assert!(e.to_string().contains("max_buffered_bytes"), "{e}");
        asm.drop_partial("b");
        assert_eq!(
            asm.push(env("a", 1, 2, "12"), now).unwrap().as_deref(),
            Some("123412")
        );
        assert_eq!(asm.buffered_bytes(), 0);
    }

    /// Every envelope is under the limit, is what serializing a `ChunkEnvelope` gives, and the
    /// payload is cut where the escaped lengths reach the budget.
    #[test]
    fn envelopes_match_serde_and_char_walk() {
        let payload = format!(
            "{}\"quoted\"\n\t\u{1}{}",
            "é-日本-🎉-x".repeat(700),
            "\\".repeat(3000)
        );
        for max in [256usize, 1000, 8000] {
            let pieces = split(&payload, max).unwrap();
            let mut joined = String::new();
            for (i, p) in pieces.iter().enumerate() {
                assert!(p.len() < max, "piece {i} is {} bytes", p.len());
                let env: ChunkEnvelope = serde_json::from_str(p).unwrap();
                assert_eq!(&serde_json::to_string(&env).unwrap(), p);
                assert_eq!((env.index, env.total), (i as u64, pieces.len() as u64));
                joined.push_str(&env.payload);
            }
            assert_eq!(joined, payload);
            // The cuts of a walk over characters.
            let id_len = 32;
            let budget = max - 1 - envelope_overhead(&"0".repeat(id_len));
            let mut lens = Vec::new();
            let (mut start, mut used) = (0, 0);
            for (i, c) in payload.char_indices() {
                let n = escaped_len(c);
                if used + n > budget {
                    lens.push(i - start);
                    start = i;
                    used = 0;
                }
                used += n;
            }
            lens.push(payload.len() - start);
            let got: Vec<usize> = pieces
                .iter()
                .map(|p| {
                    serde_json::from_str::<ChunkEnvelope>(p)
                        .unwrap()
                        .payload
                        .len()
                })
                .collect();
            assert_eq!(got, lens, "max {max}");
        }
    }

    /// A piece announcing a huge index must not allocate room for every index below it.
    #[test]
    fn huge_index_is_cheap() {
        let mut asm = Assembler::new(AssemblerLimits::default());
        let now = Instant::now();
        let total = AssemblerLimits::default().max_payload_bytes as u64;
        for i in 0..1024 {
            asm.push(env(&format!("m{i}"), total - 1, total, ""), now)
                .unwrap();
        }
        assert_eq!(asm.partial_count(), 1024);
        assert_eq!(asm.buffered_bytes(), 1024 * PIECE_OVERHEAD);
    }

    /// Empty pieces still cost their overhead, so they cannot pile up without bound.
    #[test]
    fn empty_pieces_are_charged() {
        let mut asm = Assembler::new(AssemblerLimits {
            max_buffered_bytes: 10 * PIECE_OVERHEAD,
            ..AssemblerLimits::default()
        });
        let now = Instant::now();
        for i in 0..10 {
            asm.push(env("m", i, 1000, ""), now).unwrap();
        }
        let e = asm.push(env("m", 10, 1000, ""), now).unwrap_err();
        assert!(e.to_string().contains("max_buffered_bytes"), "{e}");
        assert_eq!(asm.buffered_bytes(), 10 * PIECE_OVERHEAD);
    }

    /// A single-piece envelope reusing the id of a partial message is a changed total, not a
    /// silent replacement of what was collected.
    #[test]
    fn single_piece_with_a_partial_id_is_a_changed_total() {
        let mut asm = Assembler::new(AssemblerLimits::default());
        let now = Instant::now();
        asm.push(env("m", 0, 3, "ab"), now).unwrap();
        let e = asm.push(env("m", 0, 1, "zz"), now).unwrap_err();
        assert!(e.to_string().contains("message dropped"), "{e}");
        assert_eq!((asm.partial_count(), asm.buffered_bytes()), (0, 0));
    }

    #[test]
    fn oversized_assembly_names_the_whole_size() {
        let mut asm = Assembler::new(AssemblerLimits {
            max_payload_bytes: 10,
            ..AssemblerLimits::default()
        });
        let now = Instant::now();
        asm.push(env("m", 0, 3, "123456"), now).unwrap();
        let e = asm.push(env("m", 1, 3, "123456"), now).unwrap_err();
        assert!(e.to_string().contains("would reach 12 bytes"), "{e}");
        assert!(e.to_string().contains("message dropped"), "{e}");
        assert_eq!((asm.partial_count(), asm.buffered_bytes()), (0, 0));
    }
}
