//! `socketless serve`'s backend: the stateless REST service a WebSocket gateway calls for every
//! connect, message and disconnect (public port), plus the internal API other services use to
//! push to, close, look up and broadcast to connections (internal port, never behind the
//! ingress).
//!
//! `settings` holds the flags and their validation, `state` the [`Backend`] both listeners
//! share, `context` reads the gateway context from the request headers, `public` and
//! `internal` are the two listeners, and `error` is the one error type both answer with.
//! `cache` keeps DynamoDB calls under one per message, `push` is the `@connections` client, and
//! `upstream` hands the events to the team's own HTTP app (`serve --upstream`); `identity` is the
//! principal and attributes a session keeps from its connect. `groups` is the groups API,
//! `fanout` the one path of broadcasts and group publishes (per member to API Gateway, per
//! gateway replica through `batch`, the batch extension's client, to a socketless gateway).
//! `listing` says who is connected (from the gateway's replicas, or the sessions table).
//! `disconnect` makes `/disconnect` at least once (claims, grace, retries), and `sweeper` finds
//! the sessions whose connection is gone without one. `resume` is resume by a client-held
//! key (the logical session, its record and the connect and disconnect hooks), `resume_push`
//! the pushes to a logical session, its gap buffer and the replay.

pub mod batch;
pub mod cache;
mod context;
mod direct_post;
pub mod disconnect;
mod error;
mod fanout;
pub mod groups;
pub mod identity;
mod internal;
mod listing;
mod post_signer;
mod public;
pub mod push;
pub mod resume;
mod resume_metrics;
mod resume_push;
mod settings;
mod state;
pub mod sweeper;
pub mod upstream;

pub use context::request_context;
pub use error::ApiError;
pub use settings::{BackendSettings, PushBatch, PushRoute, ReplyMode, ServeArgs, ServeConfig};
pub use state::Backend;
