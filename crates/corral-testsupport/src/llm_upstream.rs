//! A test LLM upstream: speaks the Anthropic Messages API (JSON and SSE) and Bedrock's
//! runtime API (`invoke`, `invoke-with-response-stream` with AWS event-stream framing,
//! `count-tokens`), and records every request it receives.
//!
//! It answers with a scripted text, streamed as one `content_block_delta` per word, with
//! fixed token counts, so tests can check that what a client printed and what the gateway's
//! audit log recorded both come from here. Each server runs on its own thread and runtime
//! and stops when dropped. The event-stream encoder here is deliberately independent of the
//! gateway's, so the two check each other.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// What the upstream answers.
#[derive(Clone, Debug)]
pub struct Script {
    /// The assistant's answer; streamed one word per delta.
    pub answer: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Pause between stream events (zero: as fast as possible).
    pub event_delay: Duration,
    /// Answer every model call with this status and JSON body instead.
    pub fail_with: Option<(u16, Value)>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            answer: "Hello from the corral test upstream!".into(),
            input_tokens: 21,
            output_tokens: 9,
            event_delay: Duration::ZERO,
            fail_with: None,
        }
    }
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct LlmRequest {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl LlmRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A running test upstream.
pub struct LlmUpstream {
    addr: SocketAddr,
    tls: bool,
    requests: Arc<Mutex<Vec<LlmRequest>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LlmUpstream {
    /// Plain HTTP on 127.0.0.1.
    pub fn start(script: Script) -> LlmUpstream {
        LlmUpstream::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), None, script)
    }

    /// On `ip` (port 0), with TLS if `tls` is given.
    pub fn start_on(
        ip: IpAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        script: Script,
    ) -> LlmUpstream {
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel();
        let recorded = requests.clone();
        let is_tls = tls.is_some();
        let script = Arc::new(script);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(listener, tls, script, recorded, rx));
        });
        LlmUpstream {
            addr,
            tls: is_tls,
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or https).
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    pub fn requests(&self) -> Vec<LlmRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for LlmUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The Anthropic stream events of one answer.
pub fn anthropic_events(script: &Script, model: &str, bedrock: bool) -> Vec<Value> {
    let mut events = vec![
        json!({"type": "message_start", "message": {
            "id": "msg_corral_test", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": script.input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    let words: Vec<&str> = script.answer.split_inclusive(' ').collect();
    for w in words {
        events.push(json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": w}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": script.output_tokens}}));
    let mut stop = json!({"type": "message_stop"});
    if bedrock {
        stop["amazon-bedrock-invocationMetrics"] = json!({
            "inputTokenCount": script.input_tokens, "outputTokenCount": script.output_tokens,
            "invocationLatency": 1, "firstByteLatency": 1});
    }
    events.push(stop);
    events
}

/// The whole (non-streaming) Anthropic message of one answer.
pub fn anthropic_message(script: &Script, model: &str) -> Value {
    json!({
        "id": "msg_corral_test", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": script.answer}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": script.input_tokens, "output_tokens": script.output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type Resp = hyper::Response<ChannelBody>;

fn whole(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(body.into());
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("request-id", "req_upstream_test")
        .header("x-amzn-requestid", "upstream-test-request")
        .body(ChannelBody(rx))
        .expect("response")
}

fn streamed(content_type: &str, chunks: Vec<Bytes>, delay: Duration) -> Resp {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(c).await.is_err() {
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    });
    hyper::Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("request-id", "req_upstream_test")
        .header("x-amzn-requestid", "upstream-test-request")
        .body(ChannelBody(rx))
        .expect("response")
}

fn answer(script: &Script, method: &str, path: &str, body: &Value) -> Resp {
    if method != "POST" {
        return whole(
            404,
            "application/json",
            json!({"message": "not found"}).to_string(),
        );
    }
    let model_call =
        path == "/v1/messages" || (path.starts_with("/model/") && path.contains("/invoke"));
    if let (true, Some((status, err))) = (model_call, &script.fail_with) {
        return whole(*status, "application/json", err.to_string());
    }
    if path == "/v1/messages" {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            let chunks = anthropic_events(script, model, false)
                .iter()
                .map(|e| {
                    Bytes::from(format!(
                        "event: {}\ndata: {e}\n\n",
                        e["type"].as_str().unwrap_or("message")
                    ))
                })
                .collect();
            return streamed("text/event-stream", chunks, script.event_delay);
        }
        return whole(
            200,
            "application/json",
            anthropic_message(script, model).to_string(),
        );
    }
    if path == "/v1/messages/count_tokens" {
        return whole(
            200,
            "application/json",
            json!({"input_tokens": script.input_tokens}).to_string(),
        );
    }
    if let Some(rest) = path.strip_prefix("/model/") {
        let (model, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
        match action {
            "invoke" => {
                return whole(
                    200,
                    "application/json",
                    anthropic_message(script, model).to_string(),
                )
            }
            "invoke-with-response-stream" => {
                let chunks = anthropic_events(script, model, true)
                    .iter()
                    .map(|e| bedrock_chunk(e.to_string().as_bytes()))
                    .collect();
                return streamed(
                    "application/vnd.amazon.eventstream",
                    chunks,
                    script.event_delay,
                );
            }
            "count-tokens" => {
                return whole(
                    200,
                    "application/json",
                    json!({"inputTokens": script.input_tokens}).to_string(),
                )
            }
            _ => {}
        }
    }
    whole(
        404,
        "application/json",
        json!({"message": format!("test upstream has no {path}")}).to_string(),
    )
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    script: Arc<Script>,
    recorded: Arc<Mutex<Vec<LlmRequest>>>,
    shutdown: oneshot::Receiver<()>,
) {
    crate::upstream::serve_http(listener, tls, shutdown, move |r| {
        let path = r.target.split('?').next().unwrap_or("").to_string();
        let request = LlmRequest {
            method: r.method,
            target: r.target,
            headers: r.headers,
            body: r.body,
        };
        let json = request.json();
        let method = request.method.clone();
        recorded.lock().expect("lock").push(request);
        answer(&script, &method, &path, &json)
    })
    .await
}

/// A Bedrock `chunk` event-stream frame carrying `event_json`.
pub fn bedrock_chunk(event_json: &[u8]) -> Bytes {
    let payload = format!("{{\"bytes\":\"{}\"}}", BASE64_STANDARD.encode(event_json));
    let headers: [(&str, &str); 3] = [
        (":event-type", "chunk"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ];
    let mut head = Vec::new();
    for (k, v) in headers {
        head.push(k.len() as u8);
        head.extend_from_slice(k.as_bytes());
        head.push(7);
        head.extend_from_slice(&(v.len() as u16).to_be_bytes());
        head.extend_from_slice(v.as_bytes());
    }
    let total = 12 + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let c = crc32fast::hash(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload.as_bytes());
    let c = crc32fast::hash(&out);
    out.extend_from_slice(&c.to_be_bytes());
    Bytes::from(out)
}
