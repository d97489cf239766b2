//! Streams: relayed chunk by chunk as they arrive upstream, never buffered whole.
//!
//! A task reads the upstream body, decodes it into Anthropic stream events (to read usage
//! and stop reason, and to translate when the client's framing differs), and sends chunks
//! into a bounded channel that is the client's response body — so a slow client slows the
//! upstream read instead of growing memory. When the upstream ends, the audit record is
//! written first and only then is the channel closed, ending the client's response.

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::eventstream;
use crate::exchange::Exchange;
use crate::response::{Body, Response};
use crate::translate::{self, ConverseStreamEncoder, SseDecoder, Usage};

/// The upstream's stream framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sse,
    EventStream,
}

/// What the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Whole Anthropic message JSON (`/v1/messages`, `invoke`).
    AnthropicJson,
    /// Whole Converse response JSON.
    ConverseJson,
    /// Anthropic SSE.
    Sse,
    /// Bedrock `chunk` frames carrying Anthropic events.
    BedrockChunks,
    /// ConverseStream frames.
    ConverseStream,
}

impl Sink {
    fn content_type(self) -> &'static str {
        match self {
            Sink::Sse => "text/event-stream",
            Sink::BedrockChunks | Sink::ConverseStream => "application/vnd.amazon.eventstream",
            _ => "application/json",
        }
    }
}

/// Starts relaying `resp` and returns the client's streaming response.
pub fn start(
    ex: &mut Exchange,
    resp: crate::client::Response,
    source: Source,
    sink: Sink,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let request_id = ex.rec.request_id.clone();
    let ex = ex.hand_off();
    tokio::spawn(pump(ex, resp, source, sink, tx));
    let mut builder = http::Response::builder()
        .status(200)
        .header("content-type", sink.content_type())
        .header("request-id", &request_id)
        .header("x-amzn-requestid", &request_id);
    if sink == Sink::Sse {
        builder = builder.header("cache-control", "no-cache");
    }
    builder
        .body(Body::Stream(rx))
        .unwrap_or_else(|_| http::Response::new(Body::full("internal error")))
}

struct Decoders {
    sse: SseDecoder,
    frames: eventstream::Decoder,
}

/// Decodes a chunk into Anthropic events; `Err` carries an upstream exception or a framing error.
fn decode(source: Source, d: &mut Decoders, chunk: &[u8]) -> (Vec<Value>, Option<String>) {
    let mut events = Vec::new();
    match source {
        Source::Sse => {
            for (name, data) in d.sse.push(chunk) {
                match serde_json::from_str::<Value>(&data) {
                    Ok(v) => {
                        if name.as_deref() == Some("error")
                            || v.get("type").and_then(Value::as_str) == Some("error")
                        {
                            let msg = v
                                .pointer("/error/message")
                                .and_then(Value::as_str)
                                .unwrap_or("upstream stream error");
                            return (events, Some(msg.to_string()));
                        }
                        events.push(v)
                    }
                    Err(_) => continue,
                }
            }
        }
        Source::EventStream => {
            d.frames.push(chunk);
            loop {
                match d.frames.next_frame() {
                    Ok(Some(frame)) => match translate::event_from_chunk(&frame) {
                        Ok(v) => events.push(v),
                        Err(e) => return (events, Some(e)),
                    },
                    Ok(None) => break,
                    Err(e) => return (events, Some(e.to_string())),
                }
            }
        }
    }
    (events, None)
}

fn error_chunk(sink: Sink, message: &str) -> Bytes {
    match sink {
        Sink::Sse => Bytes::from(format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "api_error", "message": message}})
        )),
        _ => eventstream::exception("internalServerException", message),
    }
}

async fn pump(
    mut ex: Exchange,
    mut resp: crate::client::Response,
    source: Source,
    sink: Sink,
    tx: mpsc::Sender<Bytes>,
) {
    let passthrough = matches!(
        (source, sink),
        (Source::Sse, Sink::Sse) | (Source::EventStream, Sink::BedrockChunks)
    );
    let mut d = Decoders {
        sse: SseDecoder::default(),
        frames: eventstream::Decoder::new(),
    };
    let mut conv = ConverseStreamEncoder::default();
    let mut usage = Usage::default();
    let mut ttfb: Option<u64> = None;
    let mut sent: u64 = 0;
    let mut error: Option<String> = None;
    let start = ex.start;
    'outer: loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                error = Some(format!("upstream stream broke off: {e}"));
                let _ = tx
                    .send(error_chunk(sink, error.as_deref().unwrap_or_default()))
                    .await;
                break;
            }
        };
        let (events, failure) = decode(source, &mut d, &chunk);
        for ev in &events {
            usage.observe_event(ev);
        }
        let outs: Vec<Bytes> = if passthrough {
            vec![chunk]
        } else {
            let mut outs = Vec::new();
            for ev in &events {
                match sink {
                    Sink::Sse => outs.push(translate::sse_event(ev)),
                    Sink::BedrockChunks => outs.push(translate::chunk_from_event(ev)),
                    Sink::ConverseStream => {
                        outs.extend(conv.encode(ev, || start.elapsed().as_millis() as u64))
                    }
                    _ => {}
                }
            }
            if let Some(msg) = &failure {
                outs.push(error_chunk(sink, msg));
            }
            outs
        };
        for out in outs {
            if out.is_empty() {
                continue;
            }
            ttfb.get_or_insert_with(|| start.elapsed().as_millis() as u64);
            sent += out.len() as u64;
            if tx.send(out).await.is_err() {
                error = Some("client closed the connection during the stream".into());
                break 'outer;
            }
        }
        if let Some(msg) = failure {
            error = Some(format!("upstream stream error: {msg}"));
            break;
        }
    }
    ex.rec.error = error;
    // The record is written before the channel closes, i.e. before the client's response ends.
    ex.finish(200, &usage, sent, ttfb);
    drop(tx);
}
