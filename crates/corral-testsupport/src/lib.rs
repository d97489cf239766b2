//! Shared fixtures for corral's tests: real TLS material, real servers on loopback,
//! ordinary users and network namespaces. Tests read as scenarios; the plumbing lives here
//! so that no test file copies it.

#![forbid(unsafe_code)]

/// Where the test clients (Python venv, Claude Code) are installed.
pub mod deps;
/// Files and directories readable by the ordinary users the tests create.
pub mod fs;
/// `corral gateway serve` over TLS on loopback, with a test LLM upstream.
pub mod gateway;
/// A git smart-HTTP server (`git http-backend`) behind a small TLS front.
pub mod git_server;
/// A test upstream speaking the Anthropic Messages API (SSE) and Bedrock's event-stream.
pub mod llm_upstream;
/// Network namespaces that keep negative tests on the machine.
pub mod netns;
/// Running `corral` and other real processes in the background.
pub mod process;
/// A standalone `corral proxy` driven by the tests.
pub mod proxy;
/// `corral run` driven by the tests: a sandbox configuration and its upstream.
pub mod sandbox;
/// A private CA and leaf certificates, as PEM and as files.
pub mod tls;
/// Real HTTP/HTTPS servers on loopback driven by a closure.
pub mod upstream;
/// An ordinary (non-root) user.
pub mod user;
