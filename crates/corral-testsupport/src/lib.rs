//! Shared fixtures for corral tests.
