//! SigV4 verification for `@connections` (service `execute-api`), so clients that sign with
//! the AWS SDKs can be held to a configured key pair, as IAM holds them in AWS.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::timefmt;

type HmacSha256 = Hmac<Sha256>;

/// Requests signed further than this from the gateway's clock are refused (as AWS does).
const MAX_SKEW_SECS: i64 = 15 * 60;

#[derive(Clone)]
pub struct Verifier {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// SigV4 URI encoding: everything but unreserved characters, `/` kept when asked.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(h: &str) -> Option<Authorization<'_>> {
    let rest = h.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => {}
        }
    }
    let mut scope = cred?.split('/');
    let auth = Authorization {
        access_key: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: sig?,
    };
    (scope.next()? == "aws4_request").then_some(auth)
}

/// The parts of a request a signature covers, as they arrived.
pub struct Signed<'a> {
    pub method: &'a str,
    /// Path and query exactly as sent on the wire.
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a http::HeaderMap,
}

impl Verifier {
    /// Checks everything that does not need the body: the Authorization header's shape, the
    /// key, the credential scope, the signed headers and the clock. `@connections` runs it
    /// before reading a body, so an unsigned caller never gets one buffered.
    pub fn precheck(&self, headers: &http::HeaderMap, now_secs: i64) -> Result<(), String> {
        self.authorization(headers, now_secs).map(|_| ())
    }

    fn authorization<'h>(
        &self,
        headers: &'h http::HeaderMap,
        now_secs: i64,
    ) -> Result<(Authorization<'h>, &'h str), String> {
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or("missing Authorization header")?;
        let auth = parse_authorization(auth).ok_or("malformed Authorization header")?;
        if auth.access_key != self.access_key_id {
            return Err("unknown access key".into());
        }
        if auth.service != "execute-api" {
            return Err("credential scope is not for execute-api".into());
        }
        if auth.region != self.region {
            return Err("credential scope has the wrong region".into());
        }
        if !auth.signed_headers.contains(&"host") {
            return Err("the host header is not signed".into());
        }
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or("missing x-amz-date")?;
        let signed_at = timefmt::parse_amz_date(amz_date).ok_or("malformed x-amz-date")?;
        if (now_secs - signed_at).abs() > MAX_SKEW_SECS {
            return Err("signature expired or from the future".into());
        }
        if !amz_date.starts_with(auth.date) {
            return Err("credential date does not match x-amz-date".into());
        }
        Ok((auth, amz_date))
    }

    /// Checks a request's signature against the body as received. The payload hash in the
    /// signature is always the hash of that body: an `x-amz-content-sha256` header that says
    /// anything else (or `UNSIGNED-PAYLOAD`) is refused, so a captured signature cannot carry
    /// another body.
    pub fn verify(&self, req: &Signed<'_>, body: &[u8], now_secs: i64) -> Result<(), String> {
        let (auth, amz_date) = self.authorization(req.headers, now_secs)?;
        let payload_hash = hex(&Sha256::digest(body));
        if let Some(claimed) = req.headers.get("x-amz-content-sha256") {
            if claimed.as_bytes() != payload_hash.as_bytes() {
                return Err("x-amz-content-sha256 does not match the body received".into());
            }
        }

        let mut canonical_headers = String::new();
        for name in &auth.signed_headers {
            let values: Vec<String> = req
                .headers
                .get_all(*name)
                .iter()
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            if values.is_empty() {
                return Err(format!("signed header {name} is missing"));
            }
            canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        let mut query: Vec<(String, String)> = crate::percent::query_pairs(req.raw_query)
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        query.sort();
        let canonical_query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Non-S3 services sign the path as sent, encoded once more.
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
            req.method,
            uri_encode(req.raw_path, true),
            canonical_query.join("&"),
            auth.signed_headers.join(";"),
        );
        let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_access_key).as_bytes(),
            auth.date.as_bytes(),
        );
        let k_region = hmac(&k_date, auth.region.as_bytes());
        let k_service = hmac(&k_region, auth.service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        let expected = hex(&hmac(&k_signing, string_to_sign.as_bytes()));
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(())
        } else {
            Err("signature does not match".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_parsing() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20261124/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcd",
        )
        .unwrap();
        assert_eq!(
            (a.access_key, a.region, a.service, a.signature),
            ("AKID", "us-east-1", "execute-api", "abcd")
        );
        assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
        assert!(parse_authorization("Basic xyz").is_none());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=a/b, Signature=x").is_none());
    }

    #[test]
    fn encoding() {
        assert_eq!(
            uri_encode("/dev/%40connections/abc%3D", true),
            "/dev/%2540connections/abc%253D"
        );
        assert_eq!(uri_encode("a b", false), "a%20b");
    }
}
