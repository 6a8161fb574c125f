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
///
/// It runs for every `@connections` call and every carried post, so it reads the two bytes it
/// needs straight from the text rather than decoding all eleven. It takes exactly what
/// `URL_SAFE.decode` takes for 11 bytes: 15 characters of the URL-safe alphabet, the last with
/// its two unused bits zero, then `=`.
pub fn ordinal_of(id: &(impl AsRef<[u8]> + ?Sized)) -> Option<u8> {
    let id: &[u8; 16] = id.as_ref().try_into().ok()?;
    if id[15] != b'=' {
        return None;
    }
    let mut values = [0u8; 15];
    for (value, &c) in values.iter_mut().zip(id) {
        *value = URL_SAFE_VALUES[usize::from(c)];
    }
    if values.contains(&INVALID) || values[14] & 0b11 != 0 {
        return None;
    }
    let first = values[0] << 2 | values[1] >> 4;
    let last = (values[13] & 0x0f) << 4 | values[14] >> 2;
    Some(first ^ last)
}

const INVALID: u8 = 0xff;

/// Each byte's value in URL-safe base64, or [`INVALID`].
const URL_SAFE_VALUES: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// A request or message id, in the same shape, made without a system call (one per message was
/// a seventh of the gateway's system calls on the message path). A counter goes through a
/// keyed bijection (splitmix64's finaliser over the counter XOR a random key), so no two ids of
/// one process are alike, and the random key keeps ids of different processes apart. These ids
/// only tell events apart and are not secrets; connection ids, which name a connection, are
/// bytes from the system's random source, each used once.
pub fn new_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (k0, k1) = *KEY.get_or_init(|| {
        let b = random_bytes();
        let mut k = [0u8; 16];
        k[..11].copy_from_slice(&b);
        k[11..].copy_from_slice(&crate::timefmt::now_ms().to_le_bytes()[..5]);
        (
            u64::from_le_bytes(k[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(k[8..].try_into().expect("8 bytes")),
        )
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let unique = mix(n ^ k0);
    let tail = mix(unique ^ k1);
    let mut bytes = [0u8; 11];
    bytes[..8].copy_from_slice(&unique.to_le_bytes());
    bytes[8..].copy_from_slice(&tail.to_le_bytes()[..3]);
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// splitmix64's finaliser: a bijection on 64-bit values that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 11 bytes from the system's random source, drawn a buffer at a time: one system call for
/// every 23 connection ids rather than one each (a handshake made 14 system calls, this was
/// one of them). Every byte is used once, so ids are as unpredictable as when each call asked
/// the system.
fn random_bytes() -> [u8; 11] {
    use std::cell::RefCell;
    const IDS_PER_FILL: usize = 23;
    thread_local! {
        static POOL: RefCell<([u8; 11 * IDS_PER_FILL], usize)> = const { RefCell::new(([0; 11 * IDS_PER_FILL], 11 * IDS_PER_FILL)) };
    }
    let drawn = POOL.with_borrow_mut(|(pool, used)| {
        if *used == pool.len() {
            getrandom::fill(pool).ok()?;
            *used = 0;
        }
        let mut bytes = [0u8; 11];
        bytes.copy_from_slice(&pool[*used..*used + 11]);
        pool[*used..*used + 11].fill(0);
        *used += 11;
        Some(bytes)
    });
    drawn.unwrap_or_else(|| {
        // No OS randomness (should not happen): fall back to time and a counter, still unique.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let t = crate::timefmt::now_ms() as u64;
        let mut bytes = [0u8; 11];
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&n.to_le_bytes()[..3]);
        bytes
    })
}

#[cfg(test)]
mod tests {
    /// What `ordinal_of` must equal: the whole id decoded.
    fn decoded_ordinal(id: &str) -> Option<u8> {
        use base64::Engine;
        let mut bytes = [0u8; 12];
        let n = base64::engine::general_purpose::URL_SAFE
            .decode_slice(id, &mut bytes)
            .ok()?;
        (id.len() == 16 && n == 11).then(|| bytes[0] ^ bytes[10])
    }

    #[test]
    fn the_ordinal_is_read_as_decoding_the_whole_id_would() {
        let mut ids: Vec<String> = (0..=255u8).map(super::connection_id).collect();
        for ordinal in [0u8, 1, 7, 255] {
            assert_eq!(super::ordinal_of(&super::connection_id(ordinal)), Some(ordinal));
        }
        // Every ASCII character in every place, on a few ids: the alphabet, the other URL and
        // standard base64 characters, padding. A byte past ASCII is not UTF-8 alone: a
        // two-byte character comes below.
        let swaps: Vec<u8> = (0..=255u8).collect();
        for base in ids.clone().iter().take(4) {
            for place in 0..16 {
                for &c in &swaps {
                    let mut bytes = base.clone().into_bytes();
                    bytes[place] = c;
                    if let Ok(id) = String::from_utf8(bytes) {
                        ids.push(id);
                    }
                }
            }
        }
        ids.extend(
            [
                "",
                "=",
                "AAAAAAAAAAAAAAA",
                "AAAAAAAAAAAAAAAA",
                "AAAAAAAAAAAAAA==",
                "AAAAAAAAAAAAAAAA=",
            ]
            .map(String::from),
        );
        ids.push("AAAAAAAAAAAAAAé".into());
        let mut valid = 0;
        for id in &ids {
            assert_eq!(super::ordinal_of(id), decoded_ordinal(id), "{id:?}");
            valid += usize::from(decoded_ordinal(id).is_some());
        }
        assert!(
            valid > 1000 && valid < ids.len() - 1000,
            "{valid} of {} valid",
            ids.len()
        );
    }

    #[test]
    fn ids_do_not_repeat_from_one_call_to_the_next() {
        // Consecutive ids share no visible pattern: on average half the bits of the 8 unique
        // bytes differ between neighbours (a plain counter would change one or two).
        let ids: Vec<Vec<u8>> = (0..1000)
            .map(|_| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE
                    .decode(super::new_id())
                    .unwrap()
            })
            .collect();
        let flipped: u32 = ids
            .windows(2)
            .map(|w| (0..8).map(|i| (w[0][i] ^ w[1][i]).count_ones()).sum::<u32>())
            .sum();
        let mean = f64::from(flipped) / 999.0;
        assert!((24.0..40.0).contains(&mean), "mean bits flipped {mean}");
    }

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
    fn connection_ids_stay_random_across_refills_of_the_pool() {
        // 10,000 ids draw on the pool of random bytes about 435 times: no id comes twice, and
        // neighbours differ in about half of the 80 bits after the ordinal's byte (a pool handed
        // out twice, or not refilled, would repeat or zero them).
        let ids: Vec<Vec<u8>> = (0..10_000)
            .map(|_| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE
                    .decode(super::connection_id(7))
                    .unwrap()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let flipped: u32 = ids
            .windows(2)
            .map(|w| (1..11).map(|i| (w[0][i] ^ w[1][i]).count_ones()).sum::<u32>())
            .sum();
        let mean = f64::from(flipped) / 9_999.0;
        assert!((36.0..44.0).contains(&mean), "mean bits flipped {mean}");
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
