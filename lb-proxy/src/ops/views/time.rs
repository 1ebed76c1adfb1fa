//! Times as the admin API writes them: RFC 3339 in UTC to the second
//! (`2024-05-01T12:00:00Z`), the way Kubernetes writes `creationTimestamp`.
//! `humantime` does the calendar; this only keeps the API's range.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second `humantime` can write (9999-12-31T23:59:59Z).
const LAST: Duration = Duration::from_secs(253_402_300_799);

/// Formats a wall-clock time as RFC 3339 in UTC to the second. Times before
/// 1970 are shown as the epoch and times after the year 9999 as its last
/// second, so a clock gone wrong never breaks an answer.
pub fn format_rfc3339(t: SystemTime) -> String {
    let t = t.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses what [`format_rfc3339`] writes (fractional seconds and a `+00:00`
/// offset are accepted too), so the CLI can compute AGE from the API's
/// `created`. `None` for anything else, including times before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_across_leap_years_and_centuries() {
        for secs in [
            0u64,
            951_782_400, // 2000-02-29
            1_700_000_000,
            4_107_542_400, // 2100-03-01
            1_709_251_199, // 2024-02-29T23:59:59Z
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t), "{secs}");
        }
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.123+00:00"),
            Some(UNIX_EPOCH + Duration::from_millis(1_709_251_199_123))
        );
        assert_eq!(parse_rfc3339(""), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00"), None);
    }

    #[test]
    fn times_outside_the_calendar_are_clamped_not_a_panic() {
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_millis(1_500)),
            "1970-01-01T00:00:01Z"
        );
    }
}
