//! Splitting payloads too large for one notification into chunk envelopes, and assembling them
//! again (see `WIRE.md`, Chunks).
//!
//! [`split`] cuts the JSON *text* of a payload into slices whose envelopes each stay under a byte
//! limit. [`Assembler`] collects pieces, possibly interleaved with other messages, and returns the
//! whole payload once every piece arrived. Partial payloads are bounded in number, in bytes and in
//! age; whatever breaks a bound is an error that names it, never a silent drop.

use std::collections::HashMap;
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
    /// Most bytes held across all partial payloads.
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

#[derive(Debug)]
struct Partial {
    total: u64,
    pieces: Vec<Option<String>>,
    received: u64,
    bytes: usize,
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

/// Reassembles chunked payloads.
#[derive(Debug)]
pub struct Assembler {
    limits: AssemblerLimits,
    partials: HashMap<String, Partial>,
    buffered: usize,
}

impl Assembler {
    /// An empty assembler with these limits.
    pub fn new(limits: AssemblerLimits) -> Self {
        Assembler {
            limits,
            partials: HashMap::new(),
            buffered: 0,
        }
    }

    /// Payloads being assembled now.
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// Bytes held in partial payloads now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    fn drop_partial(&mut self, id: &str) {
        if let Some(p) = self.partials.remove(id) {
            self.buffered -= p.bytes;
        }
    }

    /// Adds one piece; returns the whole payload when this was the last missing piece.
    ///
    /// An invalid piece (index out of range, `total` too large or changed, a duplicate index, a
    /// bound exceeded) is an error naming the message id; a piece that breaks a bound of the whole
    /// payload also drops what was collected for it.
    pub fn push(&mut self, env: ChunkEnvelope, now: Instant) -> Result<Option<String>> {
        let id = env.message_id;
        if id.is_empty() || id.len() > crate::message::MAX_ID_LEN {
            return Err(Error::Chunk(format!(
                "chunk message_id must be 1 to {} bytes, got {}",
                crate::message::MAX_ID_LEN,
                id.len()
            )));
        }
        // Each piece carries at least one byte, so `total` can never exceed the payload limit.
        if env.total == 0 || env.total > self.limits.max_payload_bytes as u64 {
            return Err(Error::Chunk(format!(
                "chunked message {id}: total of {} pieces is out of range 1..={}",
                env.total, self.limits.max_payload_bytes
            )));
        }
        if env.index >= env.total {
            return Err(Error::Chunk(format!(
                "chunked message {id}: index {} is not below total {}",
                env.index, env.total
            )));
        }
        if env.total == 1 {
            self.drop_partial(&id);
            return Ok(Some(env.payload));
        }
        if !self.partials.contains_key(&id) && self.partials.len() >= self.limits.max_partials {
            return Err(Error::Chunk(format!(
                "chunked message {id}: {} partial messages are already being assembled (limit)",
                self.partials.len()
            )));
        }
        let piece_len = env.payload.len();
        if self.buffered + piece_len > self.limits.max_buffered_bytes {
            return Err(Error::Chunk(format!(
                "chunked message {id}: buffering {piece_len} more bytes would exceed the limit of {} bytes for partial messages",
                self.limits.max_buffered_bytes
            )));
        }
        let limits = self.limits;
        let partial = self.partials.entry(id.clone()).or_insert_with(|| Partial {
            total: env.total,
            pieces: Vec::new(),
            received: 0,
            bytes: 0,
            first_seen: now,
        });
        if partial.total != env.total {
            let was = partial.total;
            self.drop_partial(&id);
            return Err(Error::Chunk(format!(
                "chunked message {id}: piece says total {} but earlier pieces said {was}; message dropped",
                env.total
            )));
        }
        if partial.bytes + piece_len > limits.max_payload_bytes {
            self.drop_partial(&id);
            return Err(Error::TooLarge {
                what: "chunked payload",
                size: piece_len,
                limit: limits.max_payload_bytes,
            });
        }
        let index = env.index as usize;
        if partial.pieces.len() <= index {
            partial.pieces.resize(index + 1, None);
        }
        if partial.pieces[index].is_some() {
            return Err(Error::Chunk(format!(
                "chunked message {id}: duplicate piece {index}; the first one is kept"
            )));
        }
        partial.pieces[index] = Some(env.payload);
        partial.received += 1;
        partial.bytes += piece_len;
        self.buffered += piece_len;
        if partial.received < partial.total {
            return Ok(None);
        }
        let bytes = partial.bytes;
        let pieces = std::mem::take(&mut partial.pieces);
        self.drop_partial(&id);
        let mut whole = String::with_capacity(bytes);
        for p in pieces.into_iter().flatten() {
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
                    received: p.received,
                    total: p.total,
                };
                self.drop_partial(&id);
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
            max_buffered_bytes: 10,
            ..AssemblerLimits::default()
        });
        let now = Instant::now();
        asm.push(env("a", 0, 2, "1234"), now).unwrap();
        asm.push(env("b", 0, 2, "1234"), now).unwrap();
        assert!(asm.push(env("c", 0, 2, "1"), now).is_err());
        assert!(asm.push(env("a", 1, 2, "123"), now).is_err(), "byte bound");
        assert_eq!(
            asm.push(env("a", 1, 2, "12"), now).unwrap().as_deref(),
            Some("123412")
        );
    }
}
