//! What a service needs before its save that only the save would otherwise
//! give: an id for a row it queues (the answer that shows the id is written
//! before the save applies the insert), and the time, as text that sorts as
//! time does.

/// A fresh id for a row this scope inserts: random, from 1 to 2^53 - 1,
/// so JavaScript clients read it exactly. Two saves that chose the same id
/// cannot both commit: the table's primary key refuses the second, which
/// fails its save rather than overwriting (the chance is about n² / 2^54
/// for n rows).
pub fn fresh_id() -> i64 {
    let bits = wasip2::random::random::get_random_u64() & ((1 << 53) - 1);
    // 0 is the one value left out: map it to 1.
    i64::try_from(bits.max(1)).unwrap_or(1)
}

/// Random bytes from the host (for salts and nonces).
pub fn random_bytes(n: u64) -> Vec<u8> {
    wasip2::random::random::get_random_bytes(n)
}

/// The wall-clock time now, as RFC 3339 in UTC with milliseconds:
/// `2026-12-07T16:50:00.123Z`.
pub fn now_rfc3339() -> String {
    let now = wasip2::clocks::wall_clock::now();
    rfc3339(now.seconds, now.nanoseconds / 1_000_000)
}

/// The seconds since the Unix epoch now.
pub fn now_seconds() -> u64 {
    wasip2::clocks::wall_clock::now().seconds
}

/// Seconds since the Unix epoch and milliseconds as RFC 3339 in UTC:
///
/// ```
/// assert_eq!(sluice_guest::time::rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
/// assert_eq!(sluice_guest::time::rfc3339(951_782_400, 7), "2000-02-29T00:00:00.007Z");
/// ```
pub fn rfc3339(seconds: u64, millis: u32) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let (year, month, day) = civil(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_across_leap_years_and_centuries() {
        assert_eq!(rfc3339(1_455_765_776, 637), "2016-02-18T03:22:56.637Z");
        assert_eq!(rfc3339(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }
}
