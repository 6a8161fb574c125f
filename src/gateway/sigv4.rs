//! SigV4 verification (service `execute-api`) against the gateway's configured key pair, as
//! IAM holds callers in AWS: the Authorization header on `@connections` calls, and the
//! query-string presigned URL of a `$connect` handshake when the template's `$connect` route
//! has `AuthorizationType: AWS_IAM`, with the `context.identity.*` values such a connection gets.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::GatewayError;
use super::shared::Shared;
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
        let payload_hash = hex::encode(Sha256::digest(body));
        if let Some(claimed) = req.headers.get("x-amz-content-sha256") {
            if claimed.as_bytes() != payload_hash.as_bytes() {
                return Err("x-amz-content-sha256 does not match the body received".into());
            }
        }

        let canonical_headers = canonical_headers(req.headers, &auth.signed_headers)?;
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
            req.method,
            canonical_uri(req.raw_path),
            canonical_query(req.raw_query, None),
            auth.signed_headers.join(";"),
        );
        let expected = self.signature(auth.date, auth.region, auth.service, amz_date, &canonical_request);
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(())
        } else {
            Err("signature does not match".into())
        }
    }

    /// The signature of `canonical_request` with this key, for the given scope and time.
    fn signature(&self, date: &str, region: &str, service: &str, amz_date: &str, canonical_request: &str) -> String {
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        hex::encode(hmac(
            &self.signing_key(date, region, service),
            string_to_sign.as_bytes(),
        ))
    }

    /// The key for one day, region and service: four HMACs, the same for every request that
    /// day, so each thread keeps the last one it derived.
    fn signing_key(&self, date: &str, region: &str, service: &str) -> Vec<u8> {
        thread_local! {
            static LAST: std::cell::RefCell<Option<(String, String, Vec<u8>)>> = const { std::cell::RefCell::new(None) };
        }
        let scope = format!("{date}/{region}/{service}");
        let hit = LAST.with_borrow(|last| match last {
            Some((secret, s, key)) if *s == scope && *secret == self.secret_access_key => Some(key.clone()),
            _ => None,
        });
        if let Some(key) = hit {
            return key;
        }
        let k_date = hmac(format!("AWS4{}", self.secret_access_key).as_bytes(), date.as_bytes());
        let k_region = hmac(&k_date, region.as_bytes());
        let k_service = hmac(&k_region, service.as_bytes());
        let key = hmac(&k_service, b"aws4_request");
        LAST.set(Some((self.secret_access_key.clone(), scope, key.clone())));
        key
    }

    /// Checks a query-string presigned request (a `$connect` handshake under `AWS_IAM`): the
    /// `X-Amz-*` parameters' shape, the key, the credential scope (`execute-api`, the
    /// gateway's region), `host` among the signed headers, the validity window
    /// (`X-Amz-Date` at most [`MAX_SKEW_SECS`] ahead of the gateway's clock, and
    /// `X-Amz-Date + X-Amz-Expires` not passed), then the signature over the method, the path,
    /// every other query parameter and the signed headers. A handshake has no body: the
    /// payload hash signed is the empty body's, or `UNSIGNED-PAYLOAD`.
    pub fn verify_presigned(&self, req: &Signed<'_>, now_secs: i64) -> Result<(), String> {
        let params: Vec<(String, String)> = crate::percent::query_pairs(req.raw_query).collect();
        let take = |name: &str| -> Result<String, String> {
            let mut found = params.iter().filter(|(k, _)| k == name);
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Ok(v.clone()),
                (None, _) => Err(format!("missing {name}")),
                (Some(_), Some(_)) => Err(format!("{name} given more than once")),
            }
        };
        if take("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
            return Err("X-Amz-Algorithm is not AWS4-HMAC-SHA256".into());
        }
        let credential = take("X-Amz-Credential")?;
        let amz_date = take("X-Amz-Date")?;
        let expires = take("X-Amz-Expires")?;
        let signed_headers = take("X-Amz-SignedHeaders")?;
        let signature = take("X-Amz-Signature")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key, date, region, service, "aws4_request"] = scope.as_slice() else {
            return Err("malformed X-Amz-Credential".into());
        };
        if *access_key != self.access_key_id {
            return Err("unknown access key".into());
        }
        if *service != "execute-api" {
            return Err("credential scope is not for execute-api".into());
        }
        if *region != self.region {
            return Err("credential scope has the wrong region".into());
        }
        let signed_headers: Vec<&str> = signed_headers.split(';').collect();
        if !signed_headers.contains(&"host") {
            return Err("the host header is not signed".into());
        }
        let signed_at = timefmt::parse_amz_date(&amz_date).ok_or("malformed X-Amz-Date")?;
        if !amz_date.starts_with(date) {
            return Err("credential date does not match X-Amz-Date".into());
        }
        let expires: i64 = match expires.parse() {
            Ok(e) if (1..=MAX_EXPIRES_SECS).contains(&e) => e,
            _ => return Err(format!("X-Amz-Expires must be 1 to {MAX_EXPIRES_SECS} seconds")),
        };
        if signed_at - now_secs > MAX_SKEW_SECS {
            return Err("signed in the future".into());
        }
        if now_secs > signed_at + expires {
            return Err("the presigned URL has expired".into());
        }
        let canonical_headers = canonical_headers(req.headers, &signed_headers)?;
        let head = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{}\n",
            req.method,
            canonical_uri(req.raw_path),
            canonical_query(req.raw_query, Some("X-Amz-Signature")),
            signed_headers.join(";"),
        );
        let matches = [EMPTY_SHA256, "UNSIGNED-PAYLOAD"].iter().any(|payload_hash| {
            let expected = self.signature(date, region, service, &amz_date, &format!("{head}{payload_hash}"));
            bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
        });
        if matches {
            Ok(())
        } else {
            Err("signature does not match".into())
        }
    }

    /// The `context.identity.*` value a connection authorized with this key gets.
    pub fn identity(&self, field: IamIdentity) -> String {
        match field {
            IamIdentity::AccessKey | IamIdentity::Caller | IamIdentity::User => self.access_key_id.clone(),
            IamIdentity::AccountId => account_id(&self.access_key_id),
            IamIdentity::UserArn => format!(
                "arn:aws:iam::{}:user/{}",
                account_id(&self.access_key_id),
                self.access_key_id
            ),
        }
    }
}

/// The SHA-256 of an empty body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The longest validity a presigned URL may claim (seven days, as SigV4 allows).
const MAX_EXPIRES_SECS: i64 = 7 * 24 * 60 * 60;

/// The account an access key id belongs to: AWS encodes it in `AKIA…`/`ASIA…` ids (bits 7 to
/// 46 of the base32 text after the prefix); any other id reads as `000000000000`, the
/// account the template's `AWS::AccountId` evaluates to.
pub fn account_id(access_key_id: &str) -> String {
    let decoded = (access_key_id.len() == 20
        && (access_key_id.starts_with("AKIA") || access_key_id.starts_with("ASIA")))
    .then(|| {
        access_key_id[4..14].bytes().try_fold(0u64, |acc, c| {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'2'..=b'7' => c - b'2' + 26,
                _ => return None,
            };
            Some((acc << 5) | u64::from(v))
        })
    })
    .flatten();
    match decoded {
        // Ten base32 characters are 50 bits; the first 48 are the six bytes AWS reads.
        Some(bits) => format!("{:012}", ((bits >> 2) & 0x7fff_ffff_ff80) >> 7),
        None => "000000000000".to_string(),
    }
}

/// The `context.identity.*` variables a connection authorized with `AWS_IAM` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamIdentity {
    AccessKey,
    Caller,
    User,
    UserArn,
    AccountId,
}

/// The canonical URI: non-S3 services sign the path as sent, encoded once more.
fn canonical_uri(raw_path: &str) -> String {
    uri_encode(raw_path, true)
}

/// The canonical query: every parameter but `skip`, decoded, encoded again, sorted.
fn canonical_query(raw_query: &str, skip: Option<&str>) -> String {
    let mut query: Vec<(String, String)> = crate::percent::query_pairs(raw_query)
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    query.sort();
    let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// The canonical headers block: each signed header, its values trimmed and joined.
fn canonical_headers(headers: &http::HeaderMap, signed: &[&str]) -> Result<String, String> {
    let mut out = String::new();
    for name in signed {
        let values: Vec<String> = headers
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
        out.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(out)
}

/// The `$connect` authorization step of a handshake: when the template's `$connect` route has
/// `AuthorizationType: AWS_IAM`, the handshake URL must be presigned with the gateway's key
/// ([`Verifier::verify_presigned`]); anything else is refused with 403 before any backend call.
pub fn authorize_connect<B>(gw: &Shared, req: &http::Request<B>) -> Result<(), GatewayError> {
    if !gw.config.model.routes.get("$connect").is_some_and(|r| r.iam) {
        return Ok(());
    }
    // The gateway does not start with an AWS_IAM `$connect` and no key pair; refuse anyway.
    let Some(verifier) = gw.config.verifier.as_ref() else {
        return Err(GatewayError::IamRefused);
    };
    let signed = Signed {
        method: req.method().as_str(),
        raw_path: req.uri().path(),
        raw_query: req.uri().query().unwrap_or(""),
        headers: req.headers(),
    };
    verifier
        .verify_presigned(&signed, timefmt::now_ms() / 1000)
        .map_err(|reason| {
            tracing::debug!(reason = %reason, "AWS_IAM handshake refused");
            gw.metrics.connect("refused_iam");
            GatewayError::IamRefused
        })
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

    #[test]
    fn signing_keys_kept_per_scope_and_secret() {
        let v = |secret: &str| Verifier {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: secret.into(),
            region: "us-east-1".into(),
        };
        // AWS's documented derivation example.
        let known = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d";
        let a = v("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        assert_eq!(hex::encode(a.signing_key("20120215", "us-east-1", "iam")), known);
        assert_eq!(
            hex::encode(a.signing_key("20120215", "us-east-1", "iam")),
            known,
            "the kept key"
        );
        assert_ne!(
            hex::encode(a.signing_key("20120216", "us-east-1", "iam")),
            known,
            "another day"
        );
        assert_ne!(
            hex::encode(v("other").signing_key("20120215", "us-east-1", "iam")),
            known,
            "another secret"
        );
        assert_eq!(hex::encode(a.signing_key("20120215", "us-east-1", "iam")), known);
    }

    #[test]
    fn account_from_the_access_key_id() {
        assert_eq!(account_id("ASIAY34FZKBOKMUTVV7A"), "609629065308");
        assert_eq!(account_id("AKIAIOSFODNN7EXAMPLE"), "581039954779");
        assert_eq!(account_id("AKIDEXAMPLE"), "000000000000");
        assert_eq!(account_id("AKIA0000000000000000"), "000000000000");
    }
}
