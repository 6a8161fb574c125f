//! The boxed future the plug-in traits return ([`crate::handler::MessageHandler`],
//! [`crate::store::SessionStore`]), so both stay object-safe and usable as `Arc<dyn ...>`; and,
//! for tests, the size of the future a function returns.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a function returns, named by its arguments' tuple: lets a test take the size of a
/// future without calling the function that makes it.
#[cfg(test)]
pub trait Returns<Args> {
    type Output;
}

#[cfg(test)]
impl<F, A, B, C, R> Returns<(A, B, C)> for F
where
    F: FnOnce(A, B, C) -> R,
{
    type Output = R;
}

#[cfg(test)]
impl<F, A, B, C, D, E, R> Returns<(A, B, C, D, E)> for F
where
    F: FnOnce(A, B, C, D, E) -> R,
{
    type Output = R;
}

/// The size of the future `f` returns, without calling it. Tests hold to a bound the futures
/// that are copied for every request or message, or held by every open connection.
#[cfg(test)]
pub fn future_size<Args, F: Returns<Args>>(_: F) -> usize {
    std::mem::size_of::<F::Output>()
}
