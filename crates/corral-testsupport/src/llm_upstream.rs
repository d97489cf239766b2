//! Owned by the gateway work.
