//! The SigV4 verifier: any Authorization, date and content-hash headers, any path, query and
//! body. It must never panic, and never accept what the test's key did not sign.
#![no_main]
use libfuzzer_sys::fuzz_target;
use socketless::gateway::{Signed, Verifier};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let (auth, date, hash, path, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("/dev/@connections/abc="),
        parts.next().unwrap_or(""),
    );
    let mut headers = http::HeaderMap::new();
    for (name, value) in [("authorization", auth), ("x-amz-date", date), ("x-amz-content-sha256", hash), ("host", "h")] {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));
    let v = Verifier {
        access_key_id: "AKIDFUZZ".into(),
        secret_access_key: "fuzz-secret".into(),
        region: "us-east-1".into(),
    };
    let _ = v.precheck(&headers, 1_800_000_000);
    let signed = Signed {
        method: "POST",
        raw_path,
        raw_query,
        headers: &headers,
    };
    // A random signature matching is as likely as guessing HMAC-SHA256.
    assert!(v.verify(&signed, body.as_bytes(), 1_800_000_000).is_err());
});
