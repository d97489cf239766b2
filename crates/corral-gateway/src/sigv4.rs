//! AWS Signature Version 4 for the gateway's own calls to Bedrock.
//!
//! Hand-written (HMAC-SHA256 from ring, already in the tree) instead of the `aws-sigv4`
//! crate, whose dependency tree (smithy runtime, credential types…) outweighs ~100 lines.
//! Checked against AWS's published test-suite vectors and against botocore's signature of a
//! Bedrock request (see the tests). Only what Bedrock needs: header signing, signed payload,
//! non-S3 path encoding (each segment encoded twice).

use ring::hmac;
use sha2::{Digest, Sha256};

/// Static AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A request to sign. `path` is already percent-encoded as it goes on the wire.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// Raw query string (`a=1&b=2`), possibly empty.
    pub query: &'a str,
    /// Extra headers to sign (lowercase names), besides host, x-amz-date, x-amz-security-token.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// Headers to add to the request.
pub struct Signed {
    pub amz_date: String,
    pub authorization: String,
    pub content_sha256: String,
    pub security_token: Option<String>,
}

/// Signs `req` for `service` in `region` at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    req: &Request<'_>,
    include_content_sha256: bool,
) -> Signed {
    let payload_hash = hex::encode(Sha256::digest(req.payload));
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), req.host.to_string()),
        ("x-amz-date".into(), amz_date.to_string()),
    ];
    if include_content_sha256 {
        headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    }
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    for (k, v) in req.headers {
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        payload_hash
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(&creds.secret_access_key, date, region, service);
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    Signed {
        amz_date: amz_date.to_string(),
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
        content_sha256: payload_hash,
        security_token: creds.session_token.clone(),
    }
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, service.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

/// Non-S3 services sign the path with every segment URI-encoded once more.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 encoding of everything but the unreserved characters (what SigV4 requires).
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn sig(path: &str, query: &str, method: &str, payload: &[u8]) -> String {
        let s = sign(
            &example(),
            "us-east-1",
            "service",
            "20150830T123600Z",
            &Request {
                method,
                host: "example.amazonaws.com",
                path,
                query,
                headers: &[],
                payload,
            },
            false,
        );
        s.authorization
    }

    #[test]
    fn aws_test_suite_get_vanilla() {
        assert_eq!(
            sig("/", "", "GET", b""),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn aws_test_suite_query_order() {
        assert!(sig("/", "Param2=value2&Param1=value1", "GET", b"")
            .ends_with("b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"));
    }

    /// botocore 1.44 `SigV4Auth(creds, "bedrock", "us-east-1")` on the same request gave this
    /// signature (path `:` double-encoded as `%253A` in the canonical request).
    #[test]
    fn matches_botocore_for_a_bedrock_invoke() {
        let creds = Credentials {
            session_token: Some("SESSIONTOKEN".into()),
            ..example()
        };
        let s = sign(
            &creds,
            "us-east-1",
            "bedrock",
            "20261127T041338Z",
            &Request {
                method: "POST",
                host: "bedrock-runtime.us-east-1.amazonaws.com",
                path: "/model/us.anthropic.claude-x-v1%3A0/invoke",
                query: "",
                headers: &[
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                ],
                payload: br#"{"a":1}"#,
            },
            false,
        );
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/bedrock/aws4_request, \
             SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, \
             Signature=3b7ba5e82ff421bba752aeb78e01247a378663f9566427ead7aa076cf5aa7df0"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab%2Fc"), "a:b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(uri_encode("us.anthropic.x-v1:0"), "us.anthropic.x-v1%3A0");
    }
}
