//! The application runtime.
