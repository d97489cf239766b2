//! AWS event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock uses it for
//! `invoke-with-response-stream` and `converse-stream`.
//!
//! A frame is: total length (u32 BE), headers length (u32 BE), CRC32 of those 8 bytes,
//! headers, payload, CRC32 of everything before it. Headers are
//! `name_len u8, name, type u8, value` and Bedrock only uses type 7 (string, u16 length).
//! The decoder is incremental: upstream bytes are fed as they arrive and whole frames come out,
//! so a stream is relayed frame by frame and never buffered whole.

use bytes::{Buf, Bytes, BytesMut};

/// Frames larger than this are refused (Bedrock's own limit is 16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
const PRELUDE: usize = 12;
const HEADER_STRING: u8 = 7;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl Frame {
    /// The value of the string header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `:message-type` (`event`, `exception` or `error`).
    pub fn message_type(&self) -> &str {
        self.header(":message-type").unwrap_or("event")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("event-stream frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("event-stream frame lengths are inconsistent")]
    BadLengths,
    #[error("event-stream prelude CRC mismatch")]
    PreludeCrc,
    #[error("event-stream message CRC mismatch")]
    MessageCrc,
    #[error("event-stream header is malformed")]
    BadHeader,
}

/// Encodes one frame with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(HEADER_STRING);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// A Bedrock `chunk` event carrying one Anthropic stream event (JSON) base64-encoded.
pub fn chunk_event(anthropic_event_json: &[u8]) -> Bytes {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(anthropic_event_json);
    let payload = serde_json::json!({ "bytes": b64 }).to_string();
    encode(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    )
}

/// A named event with a JSON payload (Converse stream events: `messageStart`, `metadata`…).
pub fn json_event(event_type: &str, payload: &serde_json::Value) -> Bytes {
    encode(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// An exception frame (`throttlingException`, `internalServerException`…).
pub fn exception(exception_type: &str, message: &str) -> Bytes {
    encode(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        serde_json::json!({ "message": message })
            .to_string()
            .as_bytes(),
    )
}

/// Incremental decoder.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = u32::from_be_bytes(self.buf[0..4].try_into().expect("4 bytes")) as usize;
        let head_len = u32::from_be_bytes(self.buf[4..8].try_into().expect("4 bytes")) as usize;
        let prelude_crc = u32::from_be_bytes(self.buf[8..12].try_into().expect("4 bytes"));
        if crc32fast::hash(&self.buf[0..8]) != prelude_crc {
            return Err(FrameError::PreludeCrc);
        }
        if total > MAX_FRAME {
            return Err(FrameError::TooLarge(total));
        }
        if total < PRELUDE + 4 || head_len > total - PRELUDE - 4 {
            return Err(FrameError::BadLengths);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        let crc = u32::from_be_bytes(frame[total - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(&frame[..total - 4]) != crc {
            return Err(FrameError::MessageCrc);
        }
        let headers = parse_headers(&frame[PRELUDE..PRELUDE + head_len])?;
        let payload = frame.slice(PRELUDE + head_len..total - 4);
        Ok(Some(Frame { headers, payload }))
    }
}

fn parse_headers(mut raw: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut out = Vec::new();
    while raw.has_remaining() {
        let name_len = raw.get_u8() as usize;
        if raw.remaining() < name_len + 1 {
            return Err(FrameError::BadHeader);
        }
        let name =
            String::from_utf8(raw[..name_len].to_vec()).map_err(|_| FrameError::BadHeader)?;
        raw.advance(name_len);
        let kind = raw.get_u8();
        // Value sizes for the fixed-width types of the event-stream spec.
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(FrameError::BadHeader),
        };
        match fixed {
            Some(n) => {
                if raw.remaining() < n {
                    return Err(FrameError::BadHeader);
                }
                raw.advance(n);
            }
            None => {
                if raw.remaining() < 2 {
                    return Err(FrameError::BadHeader);
                }
                let len = raw.get_u16() as usize;
                if raw.remaining() < len {
                    return Err(FrameError::BadHeader);
                }
                if kind == HEADER_STRING {
                    let value = String::from_utf8(raw[..len].to_vec())
                        .map_err(|_| FrameError::BadHeader)?;
                    out.push((name, value));
                }
                raw.advance(len);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_when_fed_byte_by_byte() {
        let a = chunk_event(br#"{"type":"message_stop"}"#);
        let b = exception("throttlingException", "slow down");
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut dec = Decoder::new();
        let mut frames = Vec::new();
        for byte in all {
            dec.push(&[byte]);
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].header(":event-type"), Some("chunk"));
        assert_eq!(frames[1].message_type(), "exception");
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn corrupted_frames_are_refused() {
        let mut raw = chunk_event(b"{}").to_vec();
        let last = raw.len() - 6;
        raw[last] ^= 0xFF;
        let mut dec = Decoder::new();
        dec.push(&raw);
        assert_eq!(dec.next_frame(), Err(FrameError::MessageCrc));
        let mut dec = Decoder::new();
        dec.push(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(dec.next_frame(), Err(FrameError::PreludeCrc));
    }

    proptest::proptest! {
        /// Untrusted upstream bytes: the decoder returns frames or errors, never panics,
        /// and never holds more than one frame's worth of input.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut dec = Decoder::new();
            dec.push(&data);
            for _ in 0..8 {
                match dec.next_frame() {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }

        /// However the stream is split into chunks, the same frames come out.
        #[test]
        fn any_split_decodes_the_same(texts in proptest::collection::vec("[a-z]{0,40}", 1..6), cut in 0usize..400) {
            let mut all = Vec::new();
            for t in &texts {
                all.extend_from_slice(&json_event("e", &serde_json::json!({"t": t})));
            }
            let cut = cut.min(all.len());
            let mut dec = Decoder::new();
            let mut got = Vec::new();
            for part in [&all[..cut], &all[cut..]] {
                dec.push(part);
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push(f);
                }
            }
            proptest::prop_assert_eq!(got.len(), texts.len());
        }
    }
}
