//! Shared fixtures for corral's tests: real TLS material, real servers on loopback,
//! ordinary users and network namespaces. Tests read as scenarios; the plumbing lives here
//! so that no test file copies it.

/// A test upstream speaking the Anthropic Messages API (SSE) and Bedrock's event-stream.
pub mod llm_upstream;
/// A git smart-HTTP server (`git http-backend`) behind a small TLS front.
pub mod git_server;
