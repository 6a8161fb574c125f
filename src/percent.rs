//! Percent-decoding for the places that read URLs by hand: path segments (connection ids, often
//! with an encoded `=`) and query strings (the handshake's, and SigV4's canonical query).

/// Decodes `%XX` escapes in one path segment; `None` when the result is not UTF-8.
pub fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The `key=value` pairs of a raw query string, decoded (invalid UTF-8 becomes U+FFFD); a pair
/// without `=` has an empty value, and empty pairs are skipped.
pub fn query_pairs(raw: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let lossy = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    raw.split('&').filter(|p| !p.is_empty()).map(move |p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (lossy(k), lossy(v))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_and_queries() {
        assert_eq!(super::decode("abc%3D").as_deref(), Some("abc="));
        assert_eq!(super::decode("%FF"), None);
        let pairs: Vec<_> = super::query_pairs("a=1&&b&c=%20x").collect();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), " x".into())
            ]
        );
    }
}
