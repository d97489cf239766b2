//! Owned by the proxy work.
