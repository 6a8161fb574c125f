//! SigV4 (`execute-api`) for the direct post: the same signature aws-sigv4 makes for a request
//! with a path, no query and a few headers (checked against it below), with the signing key
//! kept per secret and day instead of derived (four HMACs) on every call.

use std::sync::Mutex;

use aws_credential_types::Credentials;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const SERVICE: &str = "execute-api";

pub struct PostSigner {
    region: String,
    /// The last key derived: its secret, its day (`YYYYMMDD`) and the key.
    key: Mutex<Option<(String, String, [u8; 32])>>,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// SigV4's URI encoding of a path (`/` kept), applied to the path as sent: `%3D` becomes
/// `%253D`, as for every service but S3.
fn canonical_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl PostSigner {
    pub fn new(region: String) -> Self {
        PostSigner {
            region,
            key: Mutex::new(None),
        }
    }

    fn signing_key(&self, secret: &str, day: &str) -> [u8; 32] {
        let mut kept = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, d, key)) = kept.as_ref() {
            if s == secret && d == day {
                return *key;
            }
        }
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, SERVICE.as_bytes());
        let key = hmac(&k_service, b"aws4_request");
        *kept = Some((secret.to_owned(), day.to_owned(), key));
        key
    }

    /// Adds `x-amz-date`, `x-amz-security-token` (temporary credentials) and `Authorization`
    /// to a request without a query, signing every header it carries and `body`.
    pub fn sign<B>(
        &self,
        credentials: &Credentials,
        req: &mut http::Request<B>,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), String> {
        // 2026-11-24T22:39:50.123Z → 20261124T223950Z
        let iso = crate::timefmt::iso8601(now_ms);
        let amz_date: String = iso[..19]
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .chain(['Z'])
            .collect();
        let day = &amz_date[..8];
        let headers = req.headers_mut();
        headers.insert(
            "x-amz-date",
            HeaderValue::from_str(&amz_date).map_err(|e| e.to_string())?,
        );
        if let Some(token) = credentials.session_token() {
            headers.insert(
                "x-amz-security-token",
                HeaderValue::from_str(token).map_err(|e| e.to_string())?,
            );
        }
        let mut signed: Vec<(String, String)> = Vec::with_capacity(headers.len());
        for (name, value) in headers.iter() {
            let value = value.to_str().map_err(|e| e.to_string())?;
            signed.push((
                name.as_str().to_owned(),
                value.split_whitespace().collect::<Vec<_>>().join(" "),
            ));
        }
        signed.sort();
        let names = signed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
        let mut canonical = format!("{}\n{}\n\n", req.method(), canonical_path(req.uri().path()));
        for (k, v) in &signed {
            canonical.push_str(k);
            canonical.push(':');
            canonical.push_str(v);
            canonical.push('\n');
        }
        canonical.push('\n');
        canonical.push_str(&names);
        canonical.push('\n');
        canonical.push_str(&hex(&Sha256::digest(body)));
        let scope = format!("{day}/{}/{SERVICE}/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = self.signing_key(credentials.secret_access_key(), day);
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={}",
            credentials.access_key_id(),
            hex(&hmac(&key, to_sign.as_bytes()))
        );
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&authorization).map_err(|e| e.to_string())?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};

    use super::*;

    fn request() -> http::Request<()> {
        let mut req = http::Request::new(());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = "http://127.0.0.1:8080/dev/@connections/abc%3D".parse().unwrap();
        req.headers_mut()
            .insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
        req
    }

    /// What aws-sigv4 makes of the same request at the same time.
    fn reference(credentials: &Credentials, body: &[u8], now_ms: i64) -> http::HeaderMap {
        let mut req = request();
        let identity = credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(SERVICE)
            .time(UNIX_EPOCH + Duration::from_millis(now_ms as u64))
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let uri = req.uri().to_string();
        let headers = req.headers().iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap()));
        let signable = SignableRequest::new("POST", &uri, headers, SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut req);
        req.headers().clone()
    }

    #[test]
    fn signs_as_aws_sigv4_does() {
        let signer = PostSigner::new("us-east-1".into());
        let now = 1_764_680_000_123;
        for credentials in [
            Credentials::new("AKIDTEST", "test-secret", None, None, "t"),
            Credentials::new("ASIATEST", "other-secret", Some("the token".into()), None, "t"),
        ] {
            for (body, later) in [(&b"hello"[..], 0), (b"", 86_400_000), (b"hello", 0)] {
                let mut req = request();
                signer.sign(&credentials, &mut req, body, now + later).unwrap();
                let want = reference(&credentials, body, now + later);
                for h in ["authorization", "x-amz-date", "x-amz-security-token"] {
                    assert_eq!(req.headers().get(h), want.get(h), "{h}");
                }
                assert!(req.headers().contains_key("authorization"));
            }
        }
    }

    #[test]
    fn paths_are_encoded_again() {
        assert_eq!(
            canonical_path("/dev/@connections/abc%3D"),
            "/dev/%40connections/abc%253D"
        );
    }
}
