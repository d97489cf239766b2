//! Serving one file with the HTTP semantics download clients rely on: HEAD, a single
//! `Range` (206 / 416), `ETag` + `If-None-Match` (304), content types and cache headers.

use std::path::Path;
use std::time::UNIX_EPOCH;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::AsyncSeekExt;

use crate::body::MirrorBody;

pub async fn serve_file(
    req: &Request<Incoming>,
    path: &Path,
    meta: &std::fs::Metadata,
) -> (Response<MirrorBody>, Option<String>) {
    let len = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{len:x}-{mtime:x}\"");
    let base = |status| {
        let mut resp = Response::new(MirrorBody::empty());
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(
            header::ETAG,
            HeaderValue::from_str(&etag).expect("etag is ascii"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control(path)),
        );
        resp
    };
    if let Some(inm) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if inm.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        }) {
            return (base(StatusCode::NOT_MODIFIED), None);
        }
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (status, start, count) = match range {
        None | Some(RangeSpec::Ignore) => (StatusCode::OK, 0, len),
        Some(RangeSpec::Unsatisfiable) => {
            let mut resp = base(StatusCode::RANGE_NOT_SATISFIABLE);
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return (resp, None);
        }
        Some(RangeSpec::Bytes(start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
    };
    let mut resp = base(status);
    resp.headers_mut().insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&count.to_string()).expect("ascii"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
                .expect("ascii"),
        );
    }
    if req.method() == Method::HEAD {
        return (resp, None);
    }
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            return (
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot open file\n"),
                Some(format!("open {}: {e}", path.display())),
            )
        }
    };
    if start > 0 {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            return (
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file\n"),
                Some(format!("seek {}: {e}", path.display())),
            );
        }
    }
    *resp.body_mut() = MirrorBody::file(file, count);
    (resp, None)
}

/// A single byte range, or why not.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Inclusive bounds, already clamped to the file.
    Bytes(u64, u64),
    Unsatisfiable,
    /// Syntax we do not serve as a range (multiple ranges, other units): send the whole file.
    Ignore,
}

fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last N bytes.
        return match b.parse::<u64>() {
            Ok(0) => RangeSpec::Unsatisfiable,
            Ok(_) if len == 0 => RangeSpec::Unsatisfiable,
            Ok(n) => RangeSpec::Bytes(len.saturating_sub(n), len - 1),
            Err(_) => RangeSpec::Ignore,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Ignore;
    };
    let end = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(end) if end >= start => end.min(len.saturating_sub(1)),
            _ => return RangeSpec::Ignore,
        }
    };
    if start >= len {
        RangeSpec::Unsatisfiable
    } else {
        RangeSpec::Bytes(start, end)
    }
}

fn content_type(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match (name, extension.as_str()) {
        ("latest" | "stable", _) | (_, "sha256" | "txt") => "text/plain; charset=utf-8",
        (_, "json") => "application/json",
        (_, "sh") => "text/x-shellscript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Channel pointers move; versioned files never change once published.
fn cache_control(path: &Path) -> &'static str {
    match path.file_name().and_then(|n| n.to_str()) {
        Some("latest" | "stable") => "no-cache",
        _ => "public, max-age=300",
    }
}

pub fn text(status: StatusCode, body: &str) -> Response<MirrorBody> {
    let mut resp = Response::new(MirrorBody::bytes(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&body.len().to_string()).expect("ascii"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=90-1000", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), RangeSpec::Bytes(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=5-1", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignore);
    }

    proptest::proptest! {
        /// Any Range header, any file length: no panic, and a served range lies inside the file.
        #[test]
        fn range_parsing_is_total_and_in_bounds(value in "\\PC{0,40}", digits in "bytes=[0-9]{0,20}-[0-9]{0,20}", len in 0u64..u64::MAX) {
            for v in [value.as_str(), digits.as_str()] {
                if let RangeSpec::Bytes(start, end) = parse_range(v, len) {
                    proptest::prop_assert!(start <= end && end < len);
                }
            }
        }
    }
}
