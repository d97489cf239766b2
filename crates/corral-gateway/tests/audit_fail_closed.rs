//! When the audit log cannot be written, model calls are refused (fail closed) and
//! `/readyz` says the gateway is not ready.

use corral_gateway::config::Config;
use corral_gateway::server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_refuses_model_calls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (key, hash) = corral_gateway::keys::generate("k").unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!("[[keys]]\nid = \"k\"\nhash = \"{hash}\"\nowner = \"o\"\n"),
    )
    .unwrap();
    // /dev/full accepts open(O_APPEND) and fails every write with ENOSPC.
    let text = r#"
listen = "127.0.0.1:0"
keys_file = "keys.toml"
[audit]
path = "/dev/full"
[upstreams.nowhere]
kind = "anthropic"
base_url = "http://127.0.0.1:9"
auth = "none"
[[models]]
id = "m"
upstream = "nowhere"
"#;
    let config = Config::parse(text, &dir.path().join("gateway.toml")).unwrap();
    let server = Server::bind(config).await.unwrap();
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = || {
        client
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", &key)
            .body(r#"{"model":"m","max_tokens":1,"messages":[]}"#)
            .send()
    };
    // The first request's record is the write that fails (its upstream is unreachable: 502).
    assert_eq!(call().await.unwrap().status(), 502);
    let refused = call().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.text().await.unwrap().contains("audit log"));
    let ready = client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
