//! `corral run`: the rootless sandbox and its connect broker.

pub mod cli;
