//! Connection and request ids: 16 characters, base64-like and ending in `=`, as API Gateway's
//! look (11 random bytes, URL-safe base64 as in `JC1dgf9yoAMCK-g=`). Opaque to everyone else.
//!
//! A connection id also says which gateway replica holds the connection (see `peers.rs`): its
//! first byte is the replica's ordinal XOR its last byte, so ids still look random.

use base64::Engine;

/// A connection id issued by the replica with this ordinal.
pub fn connection_id(ordinal: u8) -> String {
    let mut bytes = random_bytes();
    bytes[0] = ordinal ^ bytes[10];
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// The ordinal of the replica that issued a connection id; `None` for an id of another shape.
pub fn ordinal_of(id: &str) -> Option<u8> {
    if id.len() != 16 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(id).ok()?;
    (bytes.len() == 11).then(|| bytes[0] ^ bytes[10])
}

/// A request id: random, in the same shape.
pub fn new_id() -> String {
    base64::engine::general_purpose::URL_SAFE.encode(random_bytes())
}

fn random_bytes() -> [u8; 11] {
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
    bytes
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

    #[test]
    fn connection_ids_carry_their_ordinal() {
        for ordinal in [0u8, 1, 2, 99, 255] {
            for _ in 0..100 {
                let id = super::connection_id(ordinal);
                assert_eq!(id.len(), 16);
                assert!(id.ends_with('='));
                assert_eq!(super::ordinal_of(&id), Some(ordinal));
            }
        }
        assert_eq!(super::ordinal_of("short="), None);
        assert_eq!(super::ordinal_of("!!!!!!!!!!!!!!!="), None);
    }
}
