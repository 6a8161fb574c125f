//! Connection and request ids: 16 characters, base64-like and ending in `=`, as API Gateway's
//! look (11 random bytes, URL-safe base64 as in `JC1dgf9yoAMCK-g=`). Opaque to everyone else.

use base64::Engine;

pub fn new_id() -> String {
    let mut bytes = [0u8; 11];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (should not happen): fall back to time and a counter, still unique.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let t = crate::timefmt::now_ms() as u64;
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&n.to_le_bytes()[..3]);
    }
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_and_uniqueness() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = super::new_id();
            assert_eq!(id.len(), 16);
            assert!(id.ends_with('='));
            assert!(
                id[..15]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert!(seen.insert(id));
        }
    }
}
