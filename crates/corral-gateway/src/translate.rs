//! Translation between the surfaces: Anthropic Messages (JSON and SSE), Bedrock invoke
//! (the same JSON inside event-stream `chunk` frames) and Bedrock Converse.
//!
//! The common currency is the Anthropic stream event (`message_start`, `content_block_delta`,
//! …, `message_stop`) as JSON: every upstream stream is decoded into those, every client
//! stream is encoded from them, and [`Usage`] is read from them on the way through.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use crate::eventstream;

/// Token counts and stop reason gathered from a response or a stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub stop_reason: Option<String>,
}

impl Usage {
    fn absorb(&mut self, usage: &Value) {
        let get = |k: &str| usage.get(k).and_then(Value::as_u64);
        if let Some(v) = get("input_tokens") {
            self.input = v;
        }
        if let Some(v) = get("output_tokens") {
            self.output = v;
        }
        if let Some(v) = get("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = get("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
    }

    /// Reads a whole Anthropic message (non-streaming response).
    pub fn from_message(msg: &Value) -> Usage {
        let mut u = Usage::default();
        if let Some(usage) = msg.get("usage") {
            u.absorb(usage);
        }
        u.stop_reason = msg
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        u
    }

    /// Reads one Anthropic stream event.
    pub fn observe_event(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(usage) = event.pointer("/message/usage") {
                    self.absorb(usage);
                }
            }
            Some("message_delta") => {
                if let Some(usage) = event.get("usage") {
                    self.absorb(usage);
                }
                if let Some(r) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_string());
                }
            }
            _ => {}
        }
    }

    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_creation
    }
}

/// Incremental `text/event-stream` parser yielding `(event name, data)`.
#[derive(Default)]
pub struct SseDecoder {
    buf: BytesMut,
    event: Option<String>,
    data: String,
}

impl SseDecoder {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(Option<String>, String)> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(pos + 1);
            let mut line = &line[..pos];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                if !self.data.is_empty() || self.event.is_some() {
                    let data = std::mem::take(&mut self.data);
                    out.push((self.event.take(), data));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {}
            }
        }
        out
    }
}

/// An Anthropic stream event as SSE.
pub fn sse_event(event: &Value) -> Bytes {
    let name = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {name}\ndata: {event}\n\n"))
}

/// Decodes a Bedrock `chunk` frame into the Anthropic event it carries.
pub fn event_from_chunk(frame: &eventstream::Frame) -> Result<Value, String> {
    if frame.message_type() != "event" {
        let kind = frame
            .header(":exception-type")
            .or_else(|| frame.header(":error-code"))
            .unwrap_or("exception")
            .to_string();
        let msg = serde_json::from_slice::<Value>(&frame.payload)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&frame.payload).into_owned());
        return Err(format!("{kind}: {msg}"));
    }
    let outer: Value = serde_json::from_slice(&frame.payload).map_err(|e| e.to_string())?;
    let b64 = outer
        .get("bytes")
        .and_then(Value::as_str)
        .ok_or("chunk without bytes")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&raw).map_err(|e| e.to_string())
}

/// A Bedrock `chunk` frame carrying `event`.
pub fn chunk_from_event(event: &Value) -> Bytes {
    eventstream::chunk_event(event.to_string().as_bytes())
}

// ---------------------------------------------------------------------------------------
// Converse <-> Anthropic Messages

/// A Converse request body as an Anthropic Messages body (no `model`, no `stream`).
pub fn converse_to_messages(conv: &Value) -> Result<Map<String, Value>, String> {
    let mut body = Map::new();
    let messages = conv
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("Converse request has no messages array")?;
    let mut out = Vec::new();
    for m in messages {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or("message without role")?;
        let content = m
            .get("content")
            .and_then(Value::as_array)
            .ok_or("message without content array")?;
        let blocks: Result<Vec<Value>, String> = content.iter().map(converse_block).collect();
        out.push(json!({ "role": role, "content": blocks? }));
    }
    body.insert("messages".into(), Value::Array(out));
    if let Some(system) = conv.get("system").and_then(Value::as_array) {
        let blocks: Vec<Value> = system
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .map(|t| json!({ "type": "text", "text": t }))
            .collect();
        if !blocks.is_empty() {
            body.insert("system".into(), Value::Array(blocks));
        }
    }
    let inf = conv.get("inferenceConfig").cloned().unwrap_or(json!({}));
    body.insert(
        "max_tokens".into(),
        inf.get("maxTokens").cloned().unwrap_or(json!(4096)),
    );
    for (from, to) in [
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("stopSequences", "stop_sequences"),
    ] {
        if let Some(v) = inf.get(from) {
            body.insert(to.into(), v.clone());
        }
    }
    if let Some(tc) = conv.get("toolConfig") {
        let tools: Vec<Value> = tc
            .get("tools")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t.get("toolSpec"))
                    .map(|s| {
                        json!({
                            "name": s.get("name").cloned().unwrap_or(Value::Null),
                            "description": s.get("description").cloned().unwrap_or(json!("")),
                            "input_schema": s.pointer("/inputSchema/json").cloned().unwrap_or(json!({"type":"object"})),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tc.get("toolChoice") {
            let c = if choice.get("any").is_some() {
                json!({"type": "any"})
            } else if let Some(name) = choice.pointer("/tool/name") {
                json!({"type": "tool", "name": name})
            } else {
                json!({"type": "auto"})
            };
            body.insert("tool_choice".into(), c);
        }
    }
    if let Some(Value::Object(extra)) = conv.get("additionalModelRequestFields") {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    Ok(body)
}

fn converse_block(b: &Value) -> Result<Value, String> {
    if let Some(t) = b.get("text") {
        return Ok(json!({ "type": "text", "text": t }));
    }
    if let Some(img) = b.get("image") {
        let format = img.get("format").and_then(Value::as_str).unwrap_or("png");
        let data = img
            .pointer("/source/bytes")
            .cloned()
            .ok_or("image without source.bytes")?;
        return Ok(
            json!({ "type": "image", "source": { "type": "base64", "media_type": format!("image/{format}"), "data": data } }),
        );
    }
    if let Some(tu) = b.get("toolUse") {
        return Ok(
            json!({ "type": "tool_use", "id": tu.get("toolUseId"), "name": tu.get("name"), "input": tu.get("input").cloned().unwrap_or(json!({})) }),
        );
    }
    if let Some(tr) = b.get("toolResult") {
        let content: Vec<Value> = tr
            .get("content")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| match (c.get("text"), c.get("json")) {
                        (Some(t), _) => json!({"type": "text", "text": t}),
                        (None, Some(j)) => json!({"type": "text", "text": j.to_string()}),
                        _ => json!({"type": "text", "text": ""}),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let is_error = tr.get("status").and_then(Value::as_str) == Some("error");
        return Ok(
            json!({ "type": "tool_result", "tool_use_id": tr.get("toolUseId"), "content": content, "is_error": is_error }),
        );
    }
    Err(format!(
        "unsupported Converse content block {}: the gateway translates text, image, toolUse and toolResult",
        b.as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default()
    ))
}

fn converse_stop(reason: Option<&str>) -> &str {
    match reason {
        Some("max_tokens") => "max_tokens",
        Some("stop_sequence") => "stop_sequence",
        Some("tool_use") => "tool_use",
        Some("refusal") => "guardrail_intervened",
        _ => "end_turn",
    }
}

/// A whole Anthropic message as a Converse response.
pub fn message_to_converse(msg: &Value, latency_ms: u64) -> Value {
    let content: Vec<Value> = msg
        .get("content")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| match c.get("type").and_then(Value::as_str) {
                    Some("text") => Some(json!({ "text": c.get("text") })),
                    Some("tool_use") => Some(json!({ "toolUse": { "toolUseId": c.get("id"), "name": c.get("name"), "input": c.get("input") } })),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let u = Usage::from_message(msg);
    json!({
        "output": { "message": { "role": "assistant", "content": content } },
        "stopReason": converse_stop(u.stop_reason.as_deref()),
        "usage": { "inputTokens": u.input, "outputTokens": u.output, "totalTokens": u.input + u.output },
        "metrics": { "latencyMs": latency_ms },
    })
}

/// Turns Anthropic stream events into ConverseStream event-stream frames.
#[derive(Default)]
pub struct ConverseStreamEncoder {
    usage: Usage,
}

impl ConverseStreamEncoder {
    pub fn encode(&mut self, event: &Value, latency_ms: impl Fn() -> u64) -> Vec<Bytes> {
        self.usage.observe_event(event);
        let index = event.get("index").cloned().unwrap_or(json!(0));
        let ev = eventstream::json_event;
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => vec![ev("messageStart", &json!({"role": "assistant"}))],
            Some("content_block_start") => {
                match event.pointer("/content_block/type").and_then(Value::as_str) {
                    Some("tool_use") => vec![ev(
                        "contentBlockStart",
                        &json!({"start": {"toolUse": {
                            "toolUseId": event.pointer("/content_block/id"),
                            "name": event.pointer("/content_block/name")}},
                            "contentBlockIndex": index}),
                    )],
                    _ => vec![],
                }
            }
            Some("content_block_delta") => {
                let delta = match event.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => json!({"text": event.pointer("/delta/text")}),
                    Some("input_json_delta") => {
                        json!({"toolUse": {"input": event.pointer("/delta/partial_json")}})
                    }
                    _ => return vec![],
                };
                vec![ev(
                    "contentBlockDelta",
                    &json!({"delta": delta, "contentBlockIndex": index}),
                )]
            }
            Some("content_block_stop") => {
                vec![ev("contentBlockStop", &json!({"contentBlockIndex": index}))]
            }
            Some("message_stop") => {
                let u = &self.usage;
                vec![
                    ev(
                        "messageStop",
                        &json!({"stopReason": converse_stop(u.stop_reason.as_deref())}),
                    ),
                    ev(
                        "metadata",
                        &json!({
                            "usage": {"inputTokens": u.input, "outputTokens": u.output, "totalTokens": u.input + u.output},
                            "metrics": {"latencyMs": latency_ms()},
                        }),
                    ),
                ]
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"event: message_start\r\ndata: {\"a\"").is_empty());
        let out = d.push(b":1}\r\n\r\n: ping\n\nevent: x\ndata: 2\n\n");
        assert_eq!(
            out,
            vec![
                (Some("message_start".into()), "{\"a\":1}".into()),
                (Some("x".into()), "2".into())
            ]
        );
    }

    #[test]
    fn usage_is_read_from_stream_events() {
        let mut u = Usage::default();
        u.observe_event(&json!({"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1,"cache_read_input_tokens":3}}}));
        u.observe_event(&json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}));
        assert_eq!((u.input, u.output, u.cache_read), (12, 7, 3));
        assert_eq!(u.stop_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn converse_requests_become_messages() {
        let conv = json!({
            "messages": [{"role":"user","content":[{"text":"hi"}]}],
            "system": [{"text":"be brief"}],
            "inferenceConfig": {"maxTokens": 50, "topP": 0.5}
        });
        let body = converse_to_messages(&conv).unwrap();
        assert_eq!(body["messages"][0]["content"][0]["text"], "hi");
        assert_eq!(body["system"][0]["text"], "be brief");
        assert_eq!(body["max_tokens"], 50);
        assert_eq!(body["top_p"], 0.5);
        let bad = json!({"messages": [{"role":"user","content":[{"video":{}}]}]});
        assert!(converse_to_messages(&bad).unwrap_err().contains("video"));
    }

    #[test]
    fn chunk_frames_round_trip() {
        let ev = json!({"type":"message_stop"});
        let frame = chunk_from_event(&ev);
        let mut d = eventstream::Decoder::new();
        d.push(&frame);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(event_from_chunk(&f).unwrap(), ev);
    }

    proptest::proptest! {
        /// Untrusted SSE bytes never panic the parser.
        #[test]
        fn sse_parser_takes_any_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut d = SseDecoder::default();
            let _ = d.push(&data);
        }

        /// Untrusted Converse bodies are translated or refused, never panic.
        #[test]
        fn converse_translation_takes_any_json(s in "\\PC{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = converse_to_messages(&v);
            }
        }
    }
}
