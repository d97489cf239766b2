//! One request, top to bottom: endpoint → credential → body → model route → limits →
//! upstream call → response (whole, or relayed as a stream) → audit record.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::config::{ModelRoute, UpstreamKind};
use crate::exchange::{new_request_id, Exchange};
use crate::keys::{AuthError, Caller};
use crate::listing::{get_profile, list_models, list_profiles};
use crate::relay::{self, Sink};
use crate::response::{json_response, text_response, Body, GwError, Response};
use crate::routes::{self, Endpoint};
use crate::state::Gateway;
use crate::translate::{self, Usage};
use crate::upstream::UpstreamError;

/// Entry point for every request.
pub async fn handle(gw: Arc<Gateway>, req: http::Request<Incoming>, peer: SocketAddr) -> Response {
    let endpoint = match routes::route(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err((surface, status, message)) => {
            return GwError::new(status, message).into_response(surface, &new_request_id());
        }
    };
    match endpoint {
        Endpoint::Healthz => return text_response(200, "text/plain", "ok\n".into()),
        Endpoint::Readyz => {
            return if gw.is_ready() && gw.audit.healthy() {
                text_response(200, "text/plain", "ready\n".into())
            } else {
                text_response(
                    503,
                    "text/plain",
                    "shutting down or audit log unwritable\n".into(),
                )
            };
        }
        Endpoint::Metrics => {
            return text_response(200, "text/plain; version=0.0.4", gw.metrics.render());
        }
        _ => {}
    }
    let mut ex = Exchange::new(gw.clone(), &endpoint, peer);
    if !gw.audit.healthy() {
        // Fail closed: no model call without its audit record. The refusal's own record is
        // a fresh write attempt, so the gateway recovers as soon as the disk does.
        return ex.fail(GwError::new(
            503,
            "the gateway cannot write its audit log, so it refuses requests; operators: check the audit log's disk and permissions",
        ));
    }
    match serve_api(&mut ex, endpoint, req).await {
        Ok(resp) => resp,
        Err(err) => ex.fail(err),
    }
}

fn credential(headers: &http::HeaderMap) -> Result<String, AuthError> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Ok(k.trim().to_string());
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let auth = auth.trim();
        if auth.starts_with("AWS4-HMAC-SHA256") {
            return Err(AuthError::SigV4Unsupported);
        }
        if let Some((scheme, token)) = auth.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Ok(token.trim().to_string());
            }
        }
        return Err(AuthError::Malformed);
    }
    Err(AuthError::Missing)
}

/// The caller of an endpoint that always needs a key: the one already authenticated, or
/// (never expected, but without a panic path) a fresh check.
fn authenticated(
    ex: &mut Exchange,
    caller: Option<Caller>,
    headers: &http::HeaderMap,
) -> Result<Caller, GwError> {
    match caller {
        Some(c) => Ok(c),
        None => authenticate(ex, headers),
    }
}

fn authenticate(ex: &mut Exchange, headers: &http::HeaderMap) -> Result<Caller, GwError> {
    let result = credential(headers).and_then(|c| ex.gw.keys.authenticate(&c));
    match result {
        Ok(caller) => {
            ex.rec.key_id = Some(caller.key_id.clone());
            ex.rec.owner = Some(caller.owner.clone());
            ex.rec.team = caller.team.clone();
            Ok(caller)
        }
        Err(e) => {
            ex.rec.key_id = e.key_id().map(str::to_string);
            let reason = match &e {
                AuthError::Missing => "missing",
                AuthError::SigV4Unsupported => "sigv4",
                AuthError::Malformed => "malformed",
                AuthError::Placeholder => "placeholder",
                AuthError::Unknown(_) => "unknown",
                AuthError::Revoked(_) => "revoked",
                AuthError::Expired(_) => "expired",
            };
            ex.gw.metrics.auth_failure(reason);
            tracing::warn!(
                client = %ex.rec.client,
                key_id = ex.rec.key_id.as_deref().unwrap_or("-"),
                operation = ex.rec.operation,
                request_id = %ex.rec.request_id,
                "AUTH REFUSED: {e}"
            );
            Err(GwError::new(401, e.to_string()))
        }
    }
}

async fn read_body(
    ex: &mut Exchange,
    req: http::Request<Incoming>,
) -> Result<(http::HeaderMap, Bytes), GwError> {
    let max = ex.gw.config.max_body_bytes;
    let too_large = || {
        GwError::new(
            413,
            format!("request body exceeds the gateway's limit of {max} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large());
        }
    }
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                GwError::bad_request(format!("could not read the request body: {e}"))
            }
        })?
        .to_bytes();
    ex.rec.request_bytes = bytes.len() as u64;
    Ok((parts.headers, bytes))
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, GwError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GwError::bad_request("request body must be a JSON object")),
        Err(e) => Err(GwError::bad_request(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

fn betas_from(headers: &http::HeaderMap, body: &mut Map<String, Value>) -> Vec<String> {
    let mut betas: Vec<String> = Vec::new();
    if let Some(Value::Array(items)) = body.remove("anthropic_beta") {
        betas.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    for v in headers.get_all("anthropic-beta") {
        if let Ok(s) = v.to_str() {
            betas.extend(
                s.split(',')
                    .map(|b| b.trim().to_string())
                    .filter(|b| !b.is_empty()),
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    betas.retain(|b| seen.insert(b.clone()));
    betas
}

fn resolve_model(
    ex: &mut Exchange,
    caller: &Caller,
    requested: &str,
) -> Result<ModelRoute, GwError> {
    ex.rec.requested_model = Some(requested.to_string());
    let allowed: Vec<&str> = ex
        .gw
        .models
        .all()
        .iter()
        .filter(|r| caller.may_use(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    let route = ex.gw.models.resolve(requested).cloned().ok_or_else(|| {
        GwError::new(
            404,
            format!(
                "model {requested:?} is not served by this gateway; models available to your key: {}",
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            ),
        )
    })?;
    if !caller.may_use(&route.id) {
        return Err(GwError::new(
            403,
            format!(
                "gateway key {} may not use model {:?}; it may use: {}",
                caller.key_id,
                route.id,
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        ));
    }
    ex.rec.upstream = Some(route.upstream.clone());
    ex.rec.upstream_model = Some(route.upstream_model().to_string());
    Ok(route)
}

fn admit(ex: &mut Exchange, caller: &Caller, tokens: u64) -> Result<(), GwError> {
    match ex.gw.limiter.admit(caller, tokens) {
        Ok(r) => {
            ex.reservation = Some(r);
            Ok(())
        }
        Err(rej) => {
            ex.gw.metrics.rejection(&caller.key_id, rej.scope, rej.what);
            let mut err = GwError::new(429, rej.to_string());
            err.retry_after = Some(rej.retry_after_secs);
            Err(err)
        }
    }
}

pub fn upstream_error(e: &UpstreamError) -> GwError {
    match e {
        UpstreamError::Timeout => GwError::new(504, e.to_string()),
        UpstreamError::Unreachable(_) => GwError::new(502, e.to_string()),
        UpstreamError::Status {
            status,
            message,
            retry_after,
            ..
        } => {
            let status = match *status {
                s @ (400 | 404 | 413 | 422 | 429 | 503 | 529) => s,
                401 | 403 => {
                    return GwError::new(502, format!("the upstream refused the gateway's own credentials ({status}): {message}; this is a gateway configuration problem, not your key"));
                }
                408 | 504 => 504,
                _ => 502,
            };
            let mut err = GwError::new(status, format!("upstream: {message}"));
            err.retry_after = retry_after.as_ref().and_then(|r| r.parse().ok());
            err
        }
    }
}

async fn serve_api(
    ex: &mut Exchange,
    endpoint: Endpoint,
    req: http::Request<Incoming>,
) -> Result<Response, GwError> {
    let listing = matches!(
        endpoint,
        Endpoint::ListModels | Endpoint::ListProfiles | Endpoint::GetProfile { .. }
    );
    let caller = if listing && ex.gw.config.public_model_list {
        None
    } else {
        Some(authenticate(ex, req.headers())?)
    };
    match endpoint {
        Endpoint::ListModels => Ok(list_models(ex, caller.as_ref())),
        Endpoint::ListProfiles => {
            let query = req.uri().query().unwrap_or("");
            Ok(list_profiles(ex, caller.as_ref(), query))
        }
        Endpoint::GetProfile { id } => get_profile(ex, caller.as_ref(), &id),
        Endpoint::Messages => {
            let caller = authenticated(ex, caller, req.headers())?;
            let (headers, bytes) = read_body(ex, req).await?;
            let mut body = parse_object(&bytes)?;
            let model = match body.remove("model") {
                Some(Value::String(m)) => m,
                _ => {
                    return Err(GwError::bad_request(
                        "`model` is required and must be a string",
                    ))
                }
            };
            let stream = body
                .remove("stream")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            body.remove("anthropic_version");
            let betas = betas_from(&headers, &mut body);
            let version = header(&headers, "anthropic-version");
            let sink = if stream {
                Sink::Sse
            } else {
                Sink::AnthropicJson
            };
            call_messages(
                ex,
                &caller,
                &model,
                body,
                betas,
                version,
                bytes.len(),
                sink,
                stream,
            )
            .await
        }
        Endpoint::Invoke { model, stream } => {
            let caller = authenticated(ex, caller, req.headers())?;
            let (headers, bytes) = read_body(ex, req).await?;
            let mut body = parse_object(&bytes)?;
            body.remove("anthropic_version");
            body.remove("model");
            body.remove("stream");
            let betas = betas_from(&headers, &mut body);
            let sink = if stream {
                Sink::BedrockChunks
            } else {
                Sink::AnthropicJson
            };
            call_messages(
                ex,
                &caller,
                &model,
                body,
                betas,
                None,
                bytes.len(),
                sink,
                stream,
            )
            .await
        }
        Endpoint::Converse { model, stream } => {
            let caller = authenticated(ex, caller, req.headers())?;
            let (_headers, bytes) = read_body(ex, req).await?;
            let conv = Value::Object(parse_object(&bytes)?);
            let body = translate::converse_to_messages(&conv).map_err(GwError::bad_request)?;
            let sink = if stream {
                Sink::ConverseStream
            } else {
                Sink::ConverseJson
            };
            call_messages(
                ex,
                &caller,
                &model,
                body,
                Vec::new(),
                None,
                bytes.len(),
                sink,
                stream,
            )
            .await
        }
        Endpoint::AnthropicCountTokens => {
            let caller = authenticated(ex, caller, req.headers())?;
            let (headers, bytes) = read_body(ex, req).await?;
            let mut body = parse_object(&bytes)?;
            let model = match body.remove("model") {
                Some(Value::String(m)) => m,
                _ => {
                    return Err(GwError::bad_request(
                        "`model` is required and must be a string",
                    ))
                }
            };
            let betas = betas_from(&headers, &mut body);
            let version = header(&headers, "anthropic-version");
            let n = count_tokens(ex, &caller, &model, body, betas, version).await?;
            Ok(json_response(
                200,
                &json!({"input_tokens": n}),
                &ex.rec.request_id,
            ))
        }
        Endpoint::BedrockCountTokens { model } => {
            let caller = authenticated(ex, caller, req.headers())?;
            let (headers, bytes) = read_body(ex, req).await?;
            let outer = Value::Object(parse_object(&bytes)?);
            let mut body = if let Some(b64) = outer
                .pointer("/input/invokeModel/body")
                .and_then(Value::as_str)
            {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| {
                        GwError::bad_request(format!("input.invokeModel.body is not base64: {e}"))
                    })?;
                parse_object(&raw)?
            } else if let Some(conv) = outer.pointer("/input/converse") {
                let mut conv = conv.clone();
                if conv.get("inferenceConfig").is_none() {
                    conv["inferenceConfig"] = json!({"maxTokens": 1});
                }
                translate::converse_to_messages(&conv).map_err(GwError::bad_request)?
            } else {
                return Err(GwError::bad_request(
                    "count-tokens needs input.invokeModel.body or input.converse",
                ));
            };
            body.remove("anthropic_version");
            let betas = betas_from(&headers, &mut body);
            let n = count_tokens(ex, &caller, &model, body, betas, None).await?;
            Ok(json_response(
                200,
                &json!({"inputTokens": n}),
                &ex.rec.request_id,
            ))
        }
        Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => {
            Err(GwError::new(500, "internal routing error"))
        }
    }
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn count_tokens(
    ex: &mut Exchange,
    caller: &Caller,
    model: &str,
    body: Map<String, Value>,
    betas: Vec<String>,
    version: Option<String>,
) -> Result<u64, GwError> {
    let route = resolve_model(ex, caller, model)?;
    admit(ex, caller, 0)?;
    let upstream = ex.gw.upstream(&route.upstream);
    let n = upstream
        .count_tokens(route.upstream_model(), body, &betas, version.as_deref())
        .await
        .map_err(|e| upstream_error(&e))?;
    let usage = Usage {
        input: 0,
        ..Default::default()
    };
    ex.finish(200, &usage, 0, None);
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
async fn call_messages(
    ex: &mut Exchange,
    caller: &Caller,
    model: &str,
    mut body: Map<String, Value>,
    betas: Vec<String>,
    version: Option<String>,
    request_len: usize,
    sink: Sink,
    stream: bool,
) -> Result<Response, GwError> {
    ex.rec.stream = stream;
    let route = resolve_model(ex, caller, model)?;
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(4096);
    // A rough input estimate (4 bytes per token) until the real usage settles it.
    admit(ex, caller, max_tokens + request_len as u64 / 4)?;
    if ex.gw.config.audit.bodies {
        let mut logged = Value::Object(body.clone());
        crate::audit::redact(&mut logged, &ex.gw.config.audit.redact_fields);
        ex.rec.request_body = Some(logged);
    }
    body.remove("stream");
    let upstream = ex.gw.upstream(&route.upstream);
    let resp = upstream
        .messages(
            route.upstream_model(),
            body,
            &betas,
            version.as_deref(),
            stream,
        )
        .await
        .map_err(|e| upstream_error(&e))?;
    ex.rec.upstream_request_id = crate::upstream::request_id(resp.headers());
    if stream {
        let source = match upstream.kind {
            UpstreamKind::Bedrock => relay::Source::EventStream,
            UpstreamKind::Anthropic => relay::Source::Sse,
        };
        return Ok(relay::start(ex, resp, source, sink));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| GwError::new(502, format!("upstream response broke off: {e}")))?;
    let msg: Value = serde_json::from_slice(&bytes)
        .map_err(|e| GwError::new(502, format!("upstream answered with invalid JSON: {e}")))?;
    let usage = Usage::from_message(&msg);
    let out = match sink {
        Sink::ConverseJson => Bytes::from(
            translate::message_to_converse(&msg, ex.start.elapsed().as_millis() as u64).to_string(),
        ),
        _ => bytes,
    };
    let request_id = ex.rec.request_id.clone();
    ex.finish(
        200,
        &usage,
        out.len() as u64,
        Some(ex.start.elapsed().as_millis() as u64),
    );
    Ok(http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("request-id", &request_id)
        .header("x-amzn-requestid", &request_id)
        .header("x-amzn-bedrock-input-token-count", usage.input.to_string())
        .header(
            "x-amzn-bedrock-output-token-count",
            usage.output.to_string(),
        )
        .body(Body::full(out))
        .unwrap_or_else(|_| http::Response::new(Body::full("internal error"))))
}
