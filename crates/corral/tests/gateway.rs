//! The LLM gateway, end to end: the real `corral gateway serve` binary over real TLS, the
//! test LLM upstream on loopback, and real clients — the Python `anthropic` SDK (`Anthropic`
//! and `AnthropicBedrock`), `boto3`'s `bedrock-runtime`, curl, and the Claude Code CLI.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use corral_testsupport::gateway::{
    claude_quiet_env, records_for, Gateway, UpstreamTls, ANSWER, HAIKU_BEDROCK, SONNET_BEDROCK,
    UPSTREAM_API_KEY,
};
use corral_testsupport::llm_upstream::{LlmUpstream, Script};
use corral_testsupport::netns::rerun_in_private_network;
use corral_testsupport::process::{corral_bin, output, Background};
use serde_json::Value;

#[test]
fn anthropic_sdk_gets_streamed_and_whole_answers_through_both_upstream_kinds() {
    let gw = Gateway::start(Script::default());
    let key = gw.add_key("alice@corp.example", &["--id", "alice", "--team", "eng"]);
    let out = gw.python(
        r#"
import json, os, anthropic
c = anthropic.Anthropic(base_url=os.environ["GATEWAY_URL"], api_key=os.environ["KEY"], max_retries=0)
whole = c.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                          messages=[{"role": "user", "content": "say hello"}])
with c.messages.stream(model="claude-haiku-4-5", max_tokens=100,
                       messages=[{"role": "user", "content": "say hello"}]) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
with c.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
                       messages=[{"role": "user", "content": "say hello"}]) as s:
    from_bedrock = "".join(s.text_stream)
count = c.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}])
models = [m.id for m in c.models.list().data]
print(json.dumps({"whole": whole.content[0].text, "usage": whole.usage.output_tokens,
                  "streamed": streamed, "final_usage": final.usage.output_tokens,
                  "from_bedrock": from_bedrock, "count": count.input_tokens, "models": models}))
"#,
        &[("KEY", &key)],
    );
    assert_eq!(out["whole"], ANSWER);
    assert_eq!(out["usage"], 9);
    assert_eq!(out["streamed"], ANSWER);
    assert_eq!(out["final_usage"], 9);
    assert_eq!(
        out["from_bedrock"], ANSWER,
        "Bedrock event-stream translated to SSE"
    );
    assert_eq!(out["count"], 21);
    assert_eq!(out["models"].as_array().unwrap().len(), 3);

    // The upstream saw the gateway's credentials, never the client's key.
    let reqs = gw.upstream.requests();
    for r in &reqs {
        let all = format!("{:?}", r.headers);
        assert!(!all.contains(&key), "client key leaked upstream: {all}");
    }
    let bedrock = reqs
        .iter()
        .find(|r| r.target.starts_with("/model/"))
        .expect("a Bedrock call");
    assert!(bedrock
        .header("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDCORRALTEST/"));
    assert_eq!(bedrock.json()["anthropic_version"], "bedrock-2023-05-31");
    assert!(bedrock.json().get("model").is_none());
    let direct = reqs
        .iter()
        .find(|r| r.target == "/v1/messages")
        .expect("an Anthropic call");
    assert_eq!(direct.header("x-api-key"), Some(UPSTREAM_API_KEY));
    assert_eq!(direct.json()["model"], "claude-haiku-4-5-20251001");

    // One audit record per request, with owner, team and the upstream's token counts.
    let audit = gw.audit();
    let mine = records_for(&audit, "alice");
    assert_eq!(mine.len(), 5, "{audit:#?}");
    let streams: Vec<_> = mine.iter().filter(|r| r["stream"] == true).collect();
    assert_eq!(streams.len(), 2);
    for r in &streams {
        assert_eq!(r["owner"], "alice@corp.example");
        assert_eq!(r["team"], "eng");
        assert_eq!(r["status"], 200);
        assert_eq!(r["input_tokens"], 21);
        assert_eq!(r["output_tokens"], 9);
        assert_eq!(r["stop_reason"], "end_turn");
        assert!(r["ttfb_ms"].is_u64());
    }
    let log = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !log.contains(&key) && !log.contains(UPSTREAM_API_KEY),
        "secret in the audit log"
    );
}

#[test]
fn boto3_and_anthropic_bedrock_speak_bedrock_with_a_bearer_key_over_tls() {
    let gw = Gateway::start(Script::default());
    let key = gw.add_key("bob", &["--id", "bob"]);
    let out = gw.python(
        &format!(
            r#"
import json, os, boto3, anthropic
from botocore.config import Config
url = os.environ["GATEWAY_URL"]
rt = boto3.client("bedrock-runtime", endpoint_url=url, config=Config(retries={{"max_attempts": 1}}))
body = json.dumps({{"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                   "messages": [{{"role": "user", "content": "say hello"}}]}})
r = rt.invoke_model(modelId="{SONNET_BEDROCK}", body=body)
invoke = json.loads(r["body"].read())["content"][0]["text"]
r = rt.invoke_model_with_response_stream(modelId="{HAIKU_BEDROCK}", body=body)
streamed = ""
for ev in r["body"]:
    e = json.loads(ev["chunk"]["bytes"])
    if e["type"] == "content_block_delta":
        streamed += e["delta"]["text"]
msgs = [{{"role": "user", "content": [{{"text": "say hello"}}]}}]
conv = rt.converse(modelId="{SONNET_BEDROCK}", messages=msgs, inferenceConfig={{"maxTokens": 50}})
cs = rt.converse_stream(modelId="{HAIKU_BEDROCK}", messages=msgs)
conv_stream, usage = "", None
for ev in cs["stream"]:
    if "contentBlockDelta" in ev:
        conv_stream += ev["contentBlockDelta"]["delta"]["text"]
    if "metadata" in ev:
        usage = ev["metadata"]["usage"]
ct = rt.count_tokens(modelId="{SONNET_BEDROCK}", input={{"invokeModel": {{"body": body}}}})
ctl = boto3.client("bedrock", endpoint_url=url)
profiles = ctl.list_inference_profiles(typeEquals="SYSTEM_DEFINED")["inferenceProfileSummaries"]
profile = ctl.get_inference_profile(inferenceProfileIdentifier="{SONNET_BEDROCK}")
ab = anthropic.AnthropicBedrock(base_url=url, api_key=os.environ["AWS_BEARER_TOKEN_BEDROCK"],
                                aws_region="us-east-1", max_retries=0)
with ab.messages.stream(model="{SONNET_BEDROCK}", max_tokens=50,
                        messages=[{{"role": "user", "content": "say hello"}}]) as s:
    ab_text = "".join(s.text_stream)
print(json.dumps({{"invoke": invoke, "streamed": streamed, "converse": conv["output"]["message"]["content"][0]["text"],
                  "converse_usage": conv["usage"], "conv_stream": conv_stream, "conv_stream_usage": usage,
                  "anthropic_bedrock": ab_text, "count": ct["inputTokens"],
                  "profiles": [p["inferenceProfileId"] for p in profiles],
                  "profile": profile["inferenceProfileId"]}}))
"#
        ),
        &[("AWS_BEARER_TOKEN_BEDROCK", &key)],
    );
    assert_eq!(out["invoke"], ANSWER);
    assert_eq!(
        out["streamed"], ANSWER,
        "Anthropic SSE translated to event-stream"
    );
    assert_eq!(out["converse"], ANSWER);
    assert_eq!(out["converse_usage"]["outputTokens"], 9);
    assert_eq!(out["conv_stream"], ANSWER);
    assert_eq!(out["conv_stream_usage"]["inputTokens"], 21);
    assert_eq!(out["anthropic_bedrock"], ANSWER);
    assert_eq!(out["count"], 21);
    assert!(
        out["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == SONNET_BEDROCK),
        "{out}"
    );
    assert_eq!(out["profile"], SONNET_BEDROCK);
    let audit = gw.audit();
    let ops: Vec<&str> = records_for(&audit, "bob")
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    for op in ["invoke", "invoke-stream", "converse", "converse-stream"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    for r in records_for(&audit, "bob") {
        assert_eq!(r["status"], 200, "{r}");
        if r["operation"].as_str().unwrap().contains("converse")
            || r["operation"].as_str().unwrap().starts_with("invoke")
        {
            assert_eq!(r["output_tokens"], 9, "{r}");
        }
    }
}

#[test]
fn sigv4_clients_are_told_to_use_a_bearer_key() {
    let gw = Gateway::start(Script::default());
    let out = gw.python(
        r#"
import json, os, boto3, botocore
from botocore.config import Config
rt = boto3.client("bedrock-runtime", endpoint_url=os.environ["GATEWAY_URL"],
                  aws_access_key_id="AKIDCLIENT", aws_secret_access_key="x",
                  config=Config(retries={"max_attempts": 1}))
try:
    rt.invoke_model(modelId="claude-sonnet-4-5", body=b'{"max_tokens":1,"messages":[]}')
    print(json.dumps({"ok": True}))
except botocore.exceptions.ClientError as e:
    print(json.dumps({"status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                      "message": e.response["Error"]["Message"]}))
"#,
        &[],
    );
    assert_eq!(out["status"], 401);
    assert!(out["message"].as_str().unwrap().contains("SigV4"), "{out}");
}

#[test]
fn limits_answer_429s_that_the_sdks_recognise() {
    let gw = Gateway::start(Script::default());
    let rpm = gw.add_key("carol", &["--id", "carol-rpm", "--rpm", "1"]);
    let tpm = gw.add_key("carol", &["--id", "carol-tpm", "--tpm", "100"]);
    let out = gw.python(
        r#"
import json, os, anthropic, boto3, botocore
from botocore.config import Config
url = os.environ["GATEWAY_URL"]
def call(key):
    c = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
    try:
        c.messages.create(model="claude-sonnet-4-5", max_tokens=1000,
                          messages=[{"role": "user", "content": "hi"}])
        return "ok"
    except anthropic.RateLimitError as e:
        return {"kind": "rate_limit", "retry_after": e.response.headers.get("retry-after"),
                "type": e.body["error"]["type"], "message": e.body["error"]["message"]}
res = {"rpm": [call(os.environ["RPM"]), call(os.environ["RPM"])],
       "tpm": [call(os.environ["TPM"]), call(os.environ["TPM"])]}
os.environ["AWS_BEARER_TOKEN_BEDROCK"] = os.environ["RPM"]
rt = boto3.client("bedrock-runtime", endpoint_url=url, config=Config(retries={"max_attempts": 1}))
try:
    rt.invoke_model(modelId="claude-sonnet-4-5", body=b'{"max_tokens":1,"messages":[]}')
    res["boto3"] = "ok"
except rt.exceptions.ThrottlingException as e:
    res["boto3"] = {"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
print(json.dumps(res))
"#,
        &[("RPM", &rpm), ("TPM", &tpm)],
    );
    assert_eq!(out["rpm"][0], "ok");
    assert_eq!(out["rpm"][1]["type"], "rate_limit_error");
    assert!(out["rpm"][1]["message"]
        .as_str()
        .unwrap()
        .contains("requests per minute"));
    assert!(
        out["rpm"][1]["retry_after"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // 1000 max_tokens reserve the whole 100-token budget; the real usage (30) settles it,
    // leaving less than a second request needs.
    assert_eq!(out["tpm"][0], "ok");
    assert!(
        out["tpm"][1]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{out}"
    );
    assert_eq!(out["boto3"]["code"], "ThrottlingException");
    assert_eq!(out["boto3"]["status"], 429);
    let (_, _, metrics) = gw.curl("GET", "/metrics", &[], None);
    // (boto3 may retry a ThrottlingException once on its own, so only the tokens count is exact.)
    assert!(
        metrics.contains(
            "corral_gateway_rate_limited_total{key=\"carol-rpm\",scope=\"key\",limit=\"requests\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "corral_gateway_rate_limited_total{key=\"carol-tpm\",scope=\"key\",limit=\"tokens\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn a_revoked_key_is_refused_on_its_next_request() {
    let gw = Gateway::start(Script::default());
    let key = gw.add_key("dave", &["--id", "dave"]);
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let auth = format!("x-api-key: {key}");
    let (status, _, _) = gw.curl("POST", "/v1/messages", &[&auth], Some(body));
    assert_eq!(status, 200);
    let out = output(
        Command::new(corral_bin())
            .args(["gateway", "keys", "revoke", "--keys-file"])
            .arg(gw.keys_file())
            .arg("dave"),
    );
    assert!(out.status.success());
    let (status, _, resp) = gw.curl("POST", "/v1/messages", &[&auth], Some(body));
    assert_eq!(status, 401, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("revoked"));
    let last = gw.audit().pop().unwrap();
    assert_eq!(
        (last["key_id"].as_str(), last["status"].as_u64()),
        (Some("dave"), Some(401))
    );
    assert!(
        gw.process.stderr().contains("AUTH REFUSED"),
        "auth failures are loud in the log"
    );
}

#[test]
fn errors_come_in_the_format_of_the_surface_the_client_used() {
    let gw = Gateway::start_with(Script::default(), "max_body_bytes = 4096");
    let key = gw.add_key("erin", &["--id", "erin", "--models", "claude-haiku-*"]);
    let auth = format!("authorization: Bearer {key}");
    let msg = |model: &str| {
        format!(
            r#"{{"model":"{model}","max_tokens":10,"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    let anthropic_type = |body: &str| -> String {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
        v["error"]["type"].as_str().unwrap_or_default().to_string()
    };
    let cases: Vec<(u16, &str, String)> = vec![
        (
            400,
            "invalid_request_error",
            gw.curl("POST", "/v1/messages", &[&auth], Some("{nope")).2,
        ),
        (
            401,
            "authentication_error",
            gw.curl("POST", "/v1/messages", &[], Some(&msg("claude-haiku-4-5")))
                .2,
        ),
        (
            403,
            "permission_error",
            gw.curl(
                "POST",
                "/v1/messages",
                &[&auth],
                Some(&msg("claude-sonnet-4-5")),
            )
            .2,
        ),
        (
            404,
            "not_found_error",
            gw.curl("POST", "/v1/messages", &[&auth], Some(&msg("gpt-4")))
                .2,
        ),
        (
            413,
            "request_too_large",
            gw.curl("POST", "/v1/messages", &[&auth], Some(&"x".repeat(5000)))
                .2,
        ),
    ];
    for (want_status, want_type, body) in &cases {
        assert_eq!(
            &anthropic_type(body),
            want_type,
            "for {want_status}: {body}"
        );
    }
    // Bedrock surface: {"message": …} with x-amzn-errortype, ids percent-decoded.
    let (status, head, body) = gw.curl(
        "POST",
        "/model/us.anthropic.claude-nope-v1%3A0/invoke",
        &[&auth],
        Some("{}"),
    );
    assert_eq!(status, 404);
    assert!(
        head.contains("x-amzn-errortype: resourcenotfoundexception"),
        "{head}"
    );
    assert!(serde_json::from_str::<Value>(&body).unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("claude-nope-v1:0"));
    let (status, head, _) = gw.curl(
        "POST",
        &format!("/model/{}/invoke", HAIKU_BEDROCK.replace(':', "%3A")),
        &[&auth],
        Some("[1]"),
    );
    assert_eq!(status, 400);
    assert!(head.contains("x-amzn-errortype: validationexception"));
    let (status, _, body) = gw.curl("GET", "/healthz", &[], None);
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _, body) = gw.curl("GET", "/metrics", &[], None);
    assert_eq!(status, 200);
    assert!(body.contains("corral_gateway_requests_total"), "{body}");
    assert!(
        body.contains("corral_gateway_auth_failures_total{reason=\"missing\"} 1"),
        "{body}"
    );
}

#[test]
fn upstream_failures_become_502_or_pass_through_429() {
    let failing = Script {
        fail_with: Some((500, serde_json::json!({"message": "model exploded"}))),
        ..Script::default()
    };
    let gw = Gateway::start(failing);
    let key = gw.add_key("frank", &["--id", "frank"]);
    let auth = format!("x-api-key: {key}");
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, resp) = gw.curl("POST", "/v1/messages", &[&auth], Some(body));
    assert_eq!(status, 502, "{resp}");
    assert!(resp.contains("model exploded"));
    let throttled = Script {
        fail_with: Some((429, serde_json::json!({"message": "Too many tokens"}))),
        ..Script::default()
    };
    let gw = Gateway::start(throttled);
    let key = gw.add_key("frank", &["--id", "frank"]);
    let auth = format!("authorization: Bearer {key}");
    let (status, head, _) = gw.curl(
        "POST",
        "/model/claude-sonnet-4-5/invoke",
        &[&auth],
        Some(r#"{"max_tokens":1,"messages":[]}"#),
    );
    assert_eq!(status, 429);
    assert!(head.contains("x-amzn-errortype: throttlingexception"));
}

#[test]
fn upstream_tls_trusts_the_configured_ca_file_and_nothing_else() {
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let gw = Gateway::start_full(Script::default(), "", UpstreamTls::TrustedCa);
    let key = gw.add_key("jo", &["--id", "jo"]);
    let auth = format!("x-api-key: {key}");
    let (status, _, resp) = gw.curl("POST", "/v1/messages", &[&auth], Some(body));
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains(ANSWER));
    let gw = Gateway::start_full(Script::default(), "", UpstreamTls::UnknownCa);
    let key = gw.add_key("jo", &["--id", "jo"]);
    let auth = format!("x-api-key: {key}");
    let (status, _, resp) = gw.curl("POST", "/v1/messages", &[&auth], Some(body));
    assert_eq!(status, 502, "{resp}");
    assert!(resp.contains("upstream unreachable"), "{resp}");
    assert!(gw.upstream.requests().is_empty());
}

/// A forward proxy that records each request line and pipes the connection to `target`.
fn recording_proxy(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                log.lock().unwrap().push(line.trim().to_string());
                let mut up = std::net::TcpStream::connect(target).unwrap();
                up.write_all(line.as_bytes()).unwrap();
                let mut up_read = up.try_clone().unwrap();
                let mut client_write = client;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_read, &mut client_write);
                });
                let _ = std::io::copy(&mut reader, &mut up);
            });
        }
    });
    (addr, seen)
}

#[test]
fn upstream_calls_go_through_the_configured_outbound_proxy() {
    // The proxy pipes every connection to a second upstream, `probe`: whatever reaches
    // `probe` went through the proxy, whatever reaches the configured upstream did not.
    let probe = LlmUpstream::start(Script::default());
    let (proxy, seen) = recording_proxy(probe.addr());
    let gw = Gateway::start_custom(
        Script::default(),
        "",
        UpstreamTls::Plain,
        &format!("proxy = \"http://{proxy}\""),
    );
    let key = gw.add_key("kim", &["--id", "kim"]);
    let auth = format!("x-api-key: {key}");
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, resp) = gw.curl("POST", "/v1/messages", &[&auth], Some(body));
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains(ANSWER));
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("POST http://") && l.contains("/v1/messages")),
        "the proxy saw {seen:?}"
    );
    assert_eq!(
        probe.requests().len(),
        1,
        "the request reached the upstream through the proxy"
    );
    assert!(gw.upstream.requests().is_empty(), "and not directly");
}

#[test]
fn kill_9_during_a_stream_leaves_every_completed_record_intact() {
    let slow = Script {
        event_delay: Duration::from_millis(400),
        ..Script::default()
    };
    let mut gw = Gateway::start(slow);
    let key = gw.add_key("gina", &["--id", "gina"]);
    let auth = format!("x-api-key: {key}");
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        assert_eq!(gw.curl("POST", "/v1/messages", &[&auth], Some(body)).0, 200);
    }
    // A stream in flight: wait until its first bytes arrived, then kill -9 the gateway.
    let stream_body = body.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let out_path = gw.dir.path().join("stream.out");
    let mut cmd = Command::new("curl");
    cmd.args(["-sSN", "--cacert"])
        .arg(gw.ca.ca_path())
        .args([
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &stream_body,
            "-o",
        ])
        .arg(&out_path)
        .arg(format!("{}/v1/messages", gw.url));
    let _client = Background::spawn("curl stream", cmd);
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&out_path).is_ok_and(|s| s.contains("message_start"))
    });
    gw.process.signal(9);
    gw.process.wait();
    let text = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "no torn record: {text:?}");
    let records = gw.audit();
    assert_eq!(
        records.len(),
        3,
        "the three completed requests, not the killed stream"
    );
    assert!(records
        .iter()
        .all(|r| r["status"] == 200 && r["output_tokens"] == 9));
}

#[test]
fn sigterm_lets_a_running_stream_finish() {
    let slow = Script {
        event_delay: Duration::from_millis(150),
        ..Script::default()
    };
    let mut gw = Gateway::start(slow);
    let key = gw.add_key("hana", &["--id", "hana"]);
    let out = gw.dir.path().join("stream.out");
    let mut cmd = Command::new("curl");
    cmd.args(["-sSN", "--cacert"])
        .arg(gw.ca.ca_path())
        .args(["-H", &format!("x-api-key: {key}"), "-H", "content-type: application/json", "--data-binary"])
        .arg(r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
        .arg("-o")
        .arg(&out)
        .arg(format!("{}/v1/messages", gw.url));
    let mut client = Background::spawn("curl stream", cmd);
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("message_start"))
    });
    gw.process.signal(15);
    assert!(client.wait().success());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("message_stop"), "stream cut short: {text}");
    assert!(gw.process.wait().success());
    assert_eq!(gw.audit().last().unwrap()["output_tokens"], 9);
}

#[test]
fn keys_cli_shows_a_secret_once_and_the_key_helper_guards_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let key_file = dir.path().join("my-key");
    let out = output(
        Command::new(corral_bin())
            .args(["gateway", "keys", "add", "--keys-file"])
            .arg(&keys)
            .args([
                "--owner",
                "ivan",
                "--id",
                "ivan",
                "--team",
                "ml",
                "--rpm",
                "5",
                "--expires",
                "2099-01-01",
                "--key-out",
            ])
            .arg(&key_file),
    );
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("cgw_ivan_") && key.len() == "cgw_ivan_".len() + 64);
    let stored = std::fs::read_to_string(&keys).unwrap();
    assert!(!stored.contains(&key[9..]) && stored.contains("sha256:"));
    let list = output(
        Command::new(corral_bin())
            .args(["gateway", "keys", "list", "--keys-file"])
            .arg(&keys),
    );
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(
        list.contains("ivan") && list.contains("active") && !list.contains(&key[9..]),
        "{list}"
    );
    let helper = |path: &Path| {
        output(
            Command::new(corral_bin())
                .args(["gateway", "key-helper", "--file"])
                .arg(path)
                .env_remove("CORRAL_GATEWAY_KEY"),
        )
    };
    let out = helper(&key_file);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), key);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = helper(&key_file);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

// ---------------------------------------------------------------------------------------
// Claude Code. Each test re-runs itself inside a fresh network namespace holding only
// loopback (gateway, upstream and claude all inside), so the CLI cannot reach anything else
// even if a release started calling home.

enum ClaudeMode<'a> {
    /// `CLAUDE_CODE_USE_BEDROCK=1` with `AWS_BEARER_TOKEN_BEDROCK`.
    BedrockBearer(&'a str),
    /// `CLAUDE_CODE_USE_BEDROCK=1`, `CLAUDE_CODE_SKIP_BEDROCK_AUTH=1`, `apiKeyHelper`.
    BedrockKeyHelper(&'a Path),
    /// `ANTHROPIC_BASE_URL` with `apiKeyHelper`.
    FirstParty(&'a Path),
}

/// Runs `claude -p "say hello"` against the gateway; returns (success, stdout, stderr).
fn claude(gw: &Gateway, mode: ClaudeMode<'_>) -> (bool, String, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("timeout");
    cmd.arg("120")
        .arg(corral_testsupport::deps::claude())
        .args(["-p", "say hello"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home.path())
        .envs(claude_quiet_env(matches!(mode, ClaudeMode::FirstParty(_))))
        .env("NODE_EXTRA_CA_CERTS", gw.ca.ca_path())
        .env("SSL_CERT_FILE", gw.ca.ca_path());
    let helper = |file: &Path| {
        let settings = serde_json::json!({
            "apiKeyHelper": format!("{} gateway key-helper --file {}", corral_bin().display(), file.display())
        });
        std::fs::create_dir_all(home.path().join(".claude")).unwrap();
        std::fs::write(
            home.path().join(".claude/settings.json"),
            settings.to_string(),
        )
        .unwrap();
    };
    match mode {
        ClaudeMode::BedrockBearer(key) => {
            cmd.env("CLAUDE_CODE_USE_BEDROCK", "1")
                .env("AWS_REGION", "us-east-1")
                .env("ANTHROPIC_BEDROCK_BASE_URL", &gw.url)
                .env("AWS_BEARER_TOKEN_BEDROCK", key);
        }
        ClaudeMode::BedrockKeyHelper(file) => {
            helper(file);
            cmd.env("CLAUDE_CODE_USE_BEDROCK", "1")
                .env("CLAUDE_CODE_SKIP_BEDROCK_AUTH", "1")
                .env("AWS_REGION", "us-east-1")
                .env("ANTHROPIC_BEDROCK_BASE_URL", &gw.url);
        }
        ClaudeMode::FirstParty(file) => {
            helper(file);
            cmd.env("ANTHROPIC_BASE_URL", &gw.url);
        }
    }
    let out = output(&mut cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_claude_answered(gw: &Gateway, key_id: &str, result: (bool, String, String)) {
    let (ok, stdout, stderr) = result;
    assert!(
        ok && stdout.contains(ANSWER),
        "claude did not print the upstream's answer\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- gateway ---\n{}\n--- audit ---\n{:#?}",
        gw.process.stderr(),
        gw.audit()
    );
    let audit = gw.audit();
    let streamed: Vec<_> = records_for(&audit, key_id)
        .into_iter()
        .filter(|r| r["stream"] == true && r["status"] == 200)
        .collect();
    assert!(
        !streamed.is_empty(),
        "no streamed record for {key_id}: {audit:#?}"
    );
    let last = streamed.last().unwrap();
    eprintln!("claude said: {}", stdout.trim());
    for r in &audit {
        eprintln!("audit: {r}");
    }
    assert_eq!(last["output_tokens"], 9);
    assert_eq!(last["input_tokens"], 21);
}

#[test]
fn claude_code_in_bedrock_mode_with_a_bearer_key() {
    if !rerun_in_private_network("claude_code_in_bedrock_mode_with_a_bearer_key") {
        return;
    }
    let gw = Gateway::start(Script::default());
    let key = gw.add_key("claude-user", &["--id", "cc-bearer"]);
    let result = claude(&gw, ClaudeMode::BedrockBearer(&key));
    assert_claude_answered(&gw, "cc-bearer", result);
}

#[test]
fn claude_code_in_bedrock_mode_with_an_api_key_helper() {
    if !rerun_in_private_network("claude_code_in_bedrock_mode_with_an_api_key_helper") {
        return;
    }
    let gw = Gateway::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway-key");
    gw.add_key(
        "claude-user",
        &["--id", "cc-helper", "--key-out", file.to_str().unwrap()],
    );
    let result = claude(&gw, ClaudeMode::BedrockKeyHelper(&file));
    assert_claude_answered(&gw, "cc-helper", result);
}

#[test]
fn claude_code_in_first_party_mode_through_the_gateway() {
    if !rerun_in_private_network("claude_code_in_first_party_mode_through_the_gateway") {
        return;
    }
    let gw = Gateway::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway-key");
    gw.add_key(
        "claude-user",
        &["--id", "cc-first", "--key-out", file.to_str().unwrap()],
    );
    let result = claude(&gw, ClaudeMode::FirstParty(&file));
    assert_claude_answered(&gw, "cc-first", result);
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTPS upstream behind the configured proxy is reached through a `CONNECT` tunnel
/// (with the proxy's credentials from the URL), and TLS is still checked end to end.
#[test]
fn https_upstream_calls_tunnel_through_the_configured_proxy() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim().to_string());
                }
                let target = head[0].split_whitespace().nth(1).unwrap().to_string();
                log.lock().unwrap().extend(head);
                let mut up = std::net::TcpStream::connect(&target).unwrap();
                let mut client_write = client;
                client_write
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let mut up_read = up.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_read, &mut client_write);
                });
                let _ = std::io::copy(&mut reader, &mut up);
            });
        }
    });
    let gw = Gateway::start_custom(
        Script::default(),
        "",
        UpstreamTls::TrustedCa,
        &format!("proxy = \"http://egress:s3cret@{proxy}\""),
    );
    let key = gw.add_key("kim", &["--id", "kim"]);
    let auth = format!("x-api-key: {key}");
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, resp) = gw.curl("POST", "/v1/messages", &[&auth], Some(body));
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains(ANSWER));
    let seen = seen.lock().unwrap().clone();
    let upstream = gw.upstream.addr();
    assert!(
        seen.iter()
            .any(|l| *l == format!("CONNECT {upstream} HTTP/1.1")),
        "the proxy saw {seen:?}"
    );
    // Basic credentials of "egress:s3cret".
    assert!(
        seen.iter()
            .any(|l| l == "Proxy-Authorization: Basic ZWdyZXNzOnMzY3JldA=="),
        "the proxy saw {seen:?}"
    );
    assert_eq!(gw.upstream.requests().len(), 1);
}
