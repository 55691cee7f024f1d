//! The server configuration (filled from crates/store/src/config.rs).
