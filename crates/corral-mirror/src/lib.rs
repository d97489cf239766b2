//! corral's release mirror.

pub mod cli;
