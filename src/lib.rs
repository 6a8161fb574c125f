//! socketless: stateless WebSocket backends.
//!
//! A gateway (Amazon API Gateway's WebSocket API, or `socketless gateway` everywhere else) holds
//! every client connection and calls a small REST backend (`socketless serve`) for each connect,
//! message and disconnect. The backend keeps sessions in DynamoDB and holds nothing a pod cannot
//! lose, so any pod can be scaled away or killed without a client noticing.

pub mod aws;
pub mod backend;
pub mod carried;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod contract;
pub mod defaults;
pub mod dev;
pub mod future;
pub mod gateway;
pub mod handler;
pub mod http_client;
pub mod http_server;
pub mod lifecycle;
pub mod listing;
mod memcopy;
pub mod memory;
pub mod metrics;
pub mod percent;
pub mod probe;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod timefmt;
pub mod trace;

/// `serve --upstream` at its former path (the module lives in [`backend`]).
pub use backend::upstream;
