//! corral's no-sudo installer.

pub mod cli;
