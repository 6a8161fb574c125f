//! The boxed future the plug-in traits return ([`crate::handler::MessageHandler`],
//! [`crate::store::SessionStore`]), so both stay object-safe and usable as `Arc<dyn ...>`.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
