//! corral's policy model.
//!
//! Data flows one way: policy file → validated model → compiled matcher → decision.
//! (Filled in by the policy work; see issue "Workspace, policy engine".)

pub mod cli;
