//! Flag values the admin CLI parses itself: durations (`90s`, `15m`, `1h`,
//! `30d`), expiry times (RFC 3339 or a duration from now) and metadata pairs.
//! Everything the server validates (scopes, CIDRs, names) is sent as given, so
//! that the server stays the one authority on what is valid.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parses `0` or a whole number with one unit: `s`, `m`, `h` or `d`.
/// A timeout: a duration longer than zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("a timeout must be longer than 0".to_owned());
    }
    Ok(duration)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration: use e.g. 0, 90s, 15m, 1h or 30d");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let Some(unit) = text.chars().last() else {
        return Err(invalid());
    };
    let seconds_per_unit: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(invalid()),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    let count: u64 = digits.parse().map_err(|_| invalid())?;
    count
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

/// When a key should expire: an RFC 3339 time, or a duration from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryTime {
    At(DateTime<Utc>),
    In(Duration),
}

impl ExpiryTime {
    /// The absolute time, resolving a duration against `now`.
    pub fn resolve(self, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        match self {
            ExpiryTime::At(time) => Ok(time),
            ExpiryTime::In(duration) => chrono::Duration::from_std(duration)
                .ok()
                .and_then(|duration| now.checked_add_signed(duration))
                .ok_or_else(|| "--expire-time is too far in the future".to_owned()),
        }
    }
}

pub fn parse_expiry_time(text: &str) -> Result<ExpiryTime, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(ExpiryTime::At(time.with_timezone(&Utc)));
    }
    parse_duration(text).map(ExpiryTime::In).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2030-01-31T00:00:00Z) nor a duration (30d)")
    })
}

/// Parses `KEY=VALUE`; the value may be empty and may contain `=`.
pub fn parse_metadata_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `--wait` / `--no-wait` as the proto's optional flag: `None` leaves the
/// server's default for that call.
pub fn wait_choice(wait: bool, no_wait: bool) -> Option<bool> {
    match (wait, no_wait) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("0", Some(0)),
            ("0s", Some(0)),
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("1h", Some(3_600)),
            ("30d", Some(2_592_000)),
            ("", None),
            ("h", None),
            ("1", None),
            ("1.5h", None),
            ("-1h", None),
            ("+1h", None),
            ("1w", None),
            ("1h30m", None),
            ("99999999999999999999d", None),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_duration(text).ok(),
                seconds.map(Duration::from_secs),
                "{text:?}"
            );
        }
    }

    #[test]
    fn expiry_times() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let absolute = parse_expiry_time("2030-02-01T12:00:00+02:00").unwrap();
        assert_eq!(
            absolute.resolve(now).unwrap().to_rfc3339(),
            "2030-02-01T10:00:00+00:00"
        );
        let relative = parse_expiry_time("2d").unwrap();
        assert_eq!(
            relative.resolve(now).unwrap().to_rfc3339(),
            "2030-01-03T00:00:00+00:00"
        );
        assert!(parse_expiry_time("tomorrow").is_err());
        assert!(parse_expiry_time("2030-02-01").is_err());
    }

    #[test]
    fn metadata_pairs() {
        assert_eq!(
            parse_metadata_pair("team=billing").unwrap(),
            ("team".to_owned(), "billing".to_owned())
        );
        assert_eq!(
            parse_metadata_pair("query=a=b").unwrap(),
            ("query".to_owned(), "a=b".to_owned())
        );
        assert_eq!(
            parse_metadata_pair("empty=").unwrap(),
            ("empty".to_owned(), String::new())
        );
        assert!(parse_metadata_pair("=value").is_err());
        assert!(parse_metadata_pair("novalue").is_err());
    }

    #[test]
    fn wait_choices() {
        assert_eq!(wait_choice(false, false), None);
        assert_eq!(wait_choice(true, false), Some(true));
        assert_eq!(wait_choice(false, true), Some(false));
    }
}
