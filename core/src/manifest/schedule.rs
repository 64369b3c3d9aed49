//! `[[schedule]]`: a function of the service run on a timer, in a scope of
//! its own, once per tick across every host on the same database.
//!
//! ```toml
//! [[schedule]]
//! function = "expire-carts"   # no parameters, or one u64: the tick's time (ms since the epoch)
//! every = "5m"                # s, m, h or d; ticks fall on multiples of it since the epoch (UTC)
//!
//! [[schedule]]
//! function = "settle-day"
//! cron = "0 3 * * *"          # minute hour day-of-month month day-of-week, in UTC
//! ```
//!
//! Every host computes the same ticks from the clock alone; which host runs
//! a tick is settled in the database (`sluice_ticks`).

use serde::Deserialize;

/// One `[[schedule]]` of a manifest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    /// The function to run: exported by the service, with no parameters or
    /// one `u64` (the tick, in milliseconds since the Unix epoch).
    pub function: String,
    /// An interval: `30s`, `5m`, `2h`, `1d`.
    pub every: Option<String>,
    /// A cron expression of five fields, in UTC.
    pub cron: Option<String>,
}

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// Every so many milliseconds, at multiples since the epoch.
    Every(i64),
    /// When the cron expression matches a minute.
    Cron(Cron),
}

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

impl Schedule {
    /// When it ticks, or why its timing is wrong.
    pub fn when(&self) -> Result<When, String> {
        match (&self.every, &self.cron) {
            (Some(every), None) => parse_every(every).map(When::Every),
            (None, Some(cron)) => Cron::parse(cron).map(When::Cron),
            _ => Err(format!(
                "schedule of {}: give exactly one of every = \"5m\" or cron = \"0 3 * * *\"",
                self.function
            )),
        }
    }

    /// What names the schedule across hosts and restarts: its function and
    /// timing. A changed timing is a new schedule.
    pub fn id(&self, service: &str) -> String {
        match (&self.every, &self.cron) {
            (Some(every), _) => format!("{service}.{} every {every}", self.function),
            (_, Some(cron)) => format!("{service}.{} cron {cron}", self.function),
            _ => format!("{service}.{}", self.function),
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        self.when().map(drop)
    }
}

impl When {
    /// The latest tick at or before `now_ms`.
    pub fn latest(&self, now_ms: i64) -> Option<i64> {
        match self {
            When::Every(every) => Some(now_ms - now_ms.rem_euclid(*every)),
            When::Cron(cron) => cron.latest(now_ms),
        }
    }
}

/// `30s`, `5m`, `2h` or `1d`, at least a second, in milliseconds.
fn parse_every(text: &str) -> Result<i64, String> {
    let wrong = || format!("every = {text:?} must be a whole number and a unit: 30s, 5m, 2h or 1d");
    let unit = text.chars().last().ok_or_else(wrong)?;
    let n: i64 = text[..text.len() - unit.len_utf8()].parse().map_err(|_| wrong())?;
    let ms = match unit {
        's' => 1000,
        'm' => MINUTE_MS,
        'h' => 60 * MINUTE_MS,
        'd' => DAY_MS,
        _ => return Err(wrong()),
    };
    match n.checked_mul(ms) {
        Some(every) if n >= 1 && every <= 366 * DAY_MS => Ok(every),
        _ => Err(format!("every = {text:?} must be from 1s to 366d")),
    }
}

/// A five-field cron expression (minute, hour, day of month, month, day of
/// week; `*`, lists, ranges and steps), in UTC. As in cron, when both the
/// day of month and the day of week are restricted, either may match.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    any_day: bool,
    any_weekday: bool,
}

impl Cron {
    /// Parses `text`, or says which field is wrong.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(format!("cron = {text:?} must have five fields: minute hour day-of-month month day-of-week"));
        };
        let field = |f: &str, name: &str, low: u32, high: u32| {
            set(f, low, high).map_err(|why| format!("cron = {text:?}: the {name} field {f:?} {why}"))
        };
        let mut weekdays = field(weekday, "day-of-week", 0, 7)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            minutes: field(minute, "minute", 0, 59)?,
            hours: field(hour, "hour", 0, 23)?,
            days: field(day, "day-of-month", 1, 31)?,
            months: field(month, "month", 1, 12)?,
            weekdays,
            any_day: *day == "*",
            any_weekday: *weekday == "*",
        })
    }

    fn day_matches(&self, day_ms: i64) -> bool {
        let days = day_ms.div_euclid(DAY_MS);
        let (_, month, day) = civil(days);
        // 1970-01-01 was a Thursday (4).
        let weekday = (days + 4).rem_euclid(7);
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        let day_ok = match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => by_day,
            (true, false) => by_weekday,
            (false, false) => by_day || by_weekday,
        };
        self.months & (1 << month) != 0 && day_ok
    }

    /// The latest matching minute at or before `now_ms`, looking back at
    /// most eight years (a 29 February on a Monday can be that far).
    pub fn latest(&self, now_ms: i64) -> Option<i64> {
        let mut day = now_ms - now_ms.rem_euclid(DAY_MS);
        let mut last_minute = (now_ms - day) / MINUTE_MS;
        for _ in 0..(8 * 366) {
            if self.day_matches(day) {
                for minute in (0..=last_minute).rev() {
                    let (hour, minute_of_hour) = (minute / 60, minute % 60);
                    if self.hours & (1 << hour) != 0 && self.minutes & (1 << minute_of_hour) != 0 {
                        return Some(day + minute * MINUTE_MS);
                    }
                }
            }
            day -= DAY_MS;
            last_minute = 24 * 60 - 1;
        }
        None
    }
}

/// The values `field` allows, from `low` to `high`, as bits.
fn set(field: &str, low: u32, high: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                (range, step.parse::<u32>().ok().filter(|s| *s > 0).ok_or("has a step that is not a positive number")?)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (low, high)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let n = number(range)?;
            (n, if part.contains('/') { high } else { n })
        };
        if from < low || to > high || from > to {
            return Err(format!("is outside {low}-{high}"));
        }
        for n in (from..=to).step_by(step as usize) {
            bits |= 1 << n;
        }
    }
    Ok(bits)
}

fn number(text: &str) -> Result<u32, String> {
    text.parse().map_err(|_| format!("has {text:?}, which is not a number"))
}

/// The year, month (1 to 12) and day (1 to 31) of day `days` since the
/// epoch, in the proleptic Gregorian calendar.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 10:17:42 UTC, a Monday.
    const NOW: i64 = 1_796_638_662_000;

    fn at(cron: &str) -> i64 {
        Cron::parse(cron).expect("parses").latest(NOW).expect("a tick")
    }

    #[test]
    fn intervals_fall_on_multiples_since_the_epoch() {
        let every = |text: &str| When::Every(parse_every(text).expect("parses")).latest(NOW);
        assert_eq!(every("1s"), Some(NOW));
        assert_eq!(every("5m"), Some(NOW - (17 % 5) * MINUTE_MS - 42_000));
        assert_eq!(every("1d"), Some(NOW - NOW % DAY_MS));
        for wrong in ["", "5", "m", "0s", "5w", "-1m", "400d"] {
            assert!(parse_every(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_manifest_holds_at_most_sixteen_schedules() {
        let one = "[[schedule]]\nfunction = \"f\"\nevery = \"1m\"\n";
        assert!(crate::manifest::Manifest::parse(&one.repeat(super::super::MAX_SCHEDULES)).is_ok());
        let too_many = crate::manifest::Manifest::parse(&one.repeat(super::super::MAX_SCHEDULES + 1));
        assert!(too_many.is_err_and(|e| e.contains("at most 16")));
        assert!(crate::manifest::Manifest::parse("[[schedule]]\nfunction = \"f\"\n").is_err(), "no timing");
    }

    #[test]
    fn cron_finds_the_latest_matching_minute() {
        assert_eq!(civil(NOW / DAY_MS), (2026, 12, 7));
        let day = NOW - NOW % DAY_MS;
        assert_eq!(at("* * * * *"), NOW - 42_000);
        assert_eq!(at("0 3 * * *"), day + 3 * 60 * MINUTE_MS);
        assert_eq!(at("30 11 * * *"), day - DAY_MS + (11 * 60 + 30) * MINUTE_MS, "later today: yesterday's");
        assert_eq!(at("*/15 * * * *"), day + (10 * 60 + 15) * MINUTE_MS);
        assert_eq!(at("0 0 * * 0"), day - DAY_MS, "Sunday midnight");
        assert_eq!(at("0 0 * * 7"), day - DAY_MS, "7 is Sunday too");
        assert_eq!(at("0 0 1 * *"), day - 6 * DAY_MS, "the first of the month");
        assert_eq!(at("0 0 1 1 *"), day - 340 * DAY_MS, "new year");
        // Both day fields restricted: either matches (the 1st, or a Friday).
        assert_eq!(at("0 0 1 * 5"), day - 3 * DAY_MS);
        assert!(Cron::parse("0 0 29 2 *").expect("parses").latest(NOW).is_some(), "a leap day is found");
        for wrong in ["* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "*/0 * * * *", "a * * * *"] {
            assert!(Cron::parse(wrong).is_err(), "{wrong}");
        }
    }
}
