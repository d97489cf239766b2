//! corral's egress proxy.

pub mod cli;
