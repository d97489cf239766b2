//! corral's LLM gateway.
//!
//! Clients (Claude Code, the Anthropic and AWS SDKs) speak either the Anthropic Messages API
//! or the Bedrock runtime API to the gateway; it authenticates them with its own keys,
//! applies per-key and per-team rate limits, forwards to the upstream their model is routed
//! to (AWS Bedrock, the Anthropic API, or any Anthropic-compatible URL) with credentials the
//! clients never see, translates between the two APIs (including stream framing), and
//! writes one audit record per request.
//!
//! Reading order: [`server`] (accept loop) → [`handler`] (one request, tracked by an
//! [`exchange::Exchange`]) → [`relay`]
//! (streams) → [`upstream`] (outbound calls, over [`client`]) and [`translate`] / [`eventstream`] (formats).
//! [`keys`], [`limits`], [`audit`] and [`metrics`] are the policy and accounting pieces.

#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod eventstream;
pub mod exchange;
pub mod handler;
pub mod keys;
pub mod limits;
pub mod listing;
pub mod metrics;
pub mod relay;
pub mod response;
pub mod routes;
pub mod server;
pub mod sigv4;
pub mod state;
pub mod translate;
pub mod upstream;
