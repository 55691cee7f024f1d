//! The application layer below the dialects: webhook delivery (signed, queued per key,
//! retried with backoff, counted) that every dialect's push events and the application
//! runtime use, and the runtime that runs a call from an application's hooks.

pub mod control;
pub mod delivery;

pub use delivery::{
    Body, Delivery, DeliveryConfig, DeliveryError, Method, Reply, Request, Signature,
};
