//! UTC timestamps: RFC 3339 for logs and key expiry, the compact `YYYYMMDDTHHMMSSZ` form
//! SigV4 wants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_secs() -> i64 {
    (now_millis() / 1000) as i64
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// `2026-11-27T03:45:58.123Z`
pub fn rfc3339_millis(millis: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

/// `2026-11-27T03:45:58Z`
pub fn rfc3339(secs: i64) -> String {
    humantime::format_rfc3339_seconds(at(secs)).to_string()
}

/// `20261127T034558Z`
pub fn amz_date(secs: i64) -> String {
    rfc3339(secs).replace(['-', ':'], "")
}

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.replacen(' ', "T", 1).replace("+00:00", "Z")
    };
    let t = humantime::parse_rfc3339(&full).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(rfc3339(1_440_938_160), "2015-08-30T12:36:00Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(parse_rfc3339("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(parse_rfc3339("2024-02-29"), Some(1_709_164_800));
        assert_eq!(
            rfc3339_millis(1_709_164_800_007),
            "2024-02-29T00:00:00.007Z"
        );
        assert_eq!(parse_rfc3339("2024-13-01"), None);
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
