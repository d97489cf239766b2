//! corral's LLM gateway.

pub mod cli;
