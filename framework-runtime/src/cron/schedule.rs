//! When a cron job runs: `every = "5m"` (ticks at whole multiples of the period, counted from
//! midnight UTC) or a five-field cron expression, in UTC or in a time zone. Both are parsed by
//! `const fn`s, so a schedule that is not valid fails the build, with the reason.
//!
//! In a time zone with daylight saving time, a minute that does not exist on the day the clocks
//! go forward is skipped that day, and a minute that happens twice when they go back runs once,
//! the first time: "once per tick" stays true, and a daily job never runs twice in a day.

use chrono::{DateTime, Datelike, Duration as TimeDelta, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// A job's schedule. Made at compile time by [`Schedule::every`] or [`Schedule::cron`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every `secs` seconds, at multiples of it since midnight UTC (`secs` divides a day).
    Every { secs: u64 },
    /// The wall-clock minutes a cron expression matches (read in UTC or the job's zone).
    Cron(CronFields),
}

/// The parsed fields of a cron expression, as bit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronFields {
    minutes: u64,
    hours: u32,
    /// Bits 1 to 31.
    days: u32,
    /// Bits 1 to 12.
    months: u16,
    /// Bits 0 (Sunday) to 6.
    weekdays: u8,
    /// Whether the day-of-month and day-of-week fields were `*`: when both are restricted, a
    /// day matching either runs (as in every cron since Vixie's).
    any_day: bool,
    any_weekday: bool,
}

const SECONDS_PER_DAY: u64 = 86_400;

impl Schedule {
    /// `"30s"`, `"1m"`, `"5m"`, `"1h"`, `"1h30m"`, `"12h"`, `"24h"`: a period that divides a day
    /// evenly, so ticks fall at the same times every day. Panics (at compile time, in
    /// [`crate::cron!`]) with the reason otherwise.
    pub const fn every(text: &str) -> Schedule {
        let b = text.as_bytes();
        if b.is_empty() {
            panic!("cron `every`: empty; write a period like \"1m\", \"30s\" or \"1h30m\"");
        }
        let mut i = 0;
        let mut total: u64 = 0;
        while i < b.len() {
            let mut n: u64 = 0;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                n = n * 10 + (b[i] - b'0') as u64;
                if n > SECONDS_PER_DAY {
                    panic!("cron `every`: the period is longer than a day");
                }
                i += 1;
            }
            if i == start || i == b.len() {
                panic!("cron `every`: write a number then a unit (s, m or h), like \"5m\"");
            }
            let unit = match b[i] {
                b's' => 1,
                b'm' => 60,
                b'h' => 3600,
                _ => panic!("cron `every`: the units are s, m and h, like \"30s\" or \"1h30m\""),
            };
            total += n * unit;
            i += 1;
        }
        if total == 0 {
            panic!("cron `every`: the period must be at least 1s");
        }
        if total > SECONDS_PER_DAY || !SECONDS_PER_DAY.is_multiple_of(total) {
            panic!(
                "cron `every`: the period must divide 24h evenly (1m, 5m, 15m, 1h, 6h, 24h, ...), \
                 so that runs fall at the same times each day; use `schedule` for others"
            );
        }
        Schedule::Every { secs: total }
    }

    /// A cron expression: `minute hour day-of-month month day-of-week`, each `*`, a
    /// number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma-separated list of these;
    /// months and weekdays also by name (`JAN`, `MON`); or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`. Panics (at compile time) with the reason if it is not valid.
    pub const fn cron(text: &str) -> Schedule {
        let text = match macro_expansion(text.as_bytes()) {
            Some(expanded) => expanded,
            None => text,
        };
        let b = text.as_bytes();
        let mut fields = [(0usize, 0usize); 5];
        let mut n = 0;
        let mut i = 0;
        while i < b.len() {
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i == b.len() {
                break;
            }
            let start = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            if n == 5 {
                panic!(
                    "cron schedule: more than five fields (minute hour day month weekday); \
                     seconds and years are not supported"
                );
            }
            fields[n] = (start, i);
            n += 1;
        }
        if n != 5 {
            panic!(
                "cron schedule: five fields are needed: minute hour day-of-month month day-of-week"
            );
        }
        let minutes = parse_field(b, fields[0], 0, 59, NONE);
        let hours = parse_field(b, fields[1], 0, 23, NONE);
        let days = parse_field(b, fields[2], 1, 31, NONE);
        let months = parse_field(b, fields[3], 1, 12, MONTHS);
        let mut weekdays = parse_field(b, fields[4], 0, 7, WEEKDAYS);
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let any_day = is_star(b, fields[2]);
        let any_weekday = is_star(b, fields[4]);
        Schedule::Cron(CronFields {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            any_day,
            any_weekday,
        })
    }

    /// The latest tick at or before `t`, a cron expression read in UTC.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.latest_at_or_before_in(t, Tz::UTC)
    }

    /// The first tick after `t`, a cron expression read in UTC.
    pub fn next_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.next_after_in(t, Tz::UTC)
    }

    /// The latest tick at or before `t`, a cron expression read in `zone` (`every` counts
    /// from midnight UTC whatever the zone).
    pub fn latest_at_or_before_in(&self, t: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        match self {
            Schedule::Every { secs } => {
                let secs = *secs as i64;
                let at = t.timestamp().div_euclid(secs) * secs;
                Utc.timestamp_opt(at, 0).single().unwrap_or(t)
            }
            Schedule::Cron(f) => f.search(t, false, zone).unwrap_or(t),
        }
    }

    /// The first tick after `t`, a cron expression read in `zone`.
    pub fn next_after_in(&self, t: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        match self {
            Schedule::Every { secs } => {
                let secs = *secs as i64;
                let at = (t.timestamp().div_euclid(secs) + 1) * secs;
                Utc.timestamp_opt(at, 0).single().unwrap_or(t)
            }
            Schedule::Cron(f) => f
                .search(t, true, zone)
                .unwrap_or(t + TimeDelta::days(366 * 8)),
        }
    }
}

impl CronFields {
    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first matching minute after `t` (`forward`), or the last at or before it, with the
    /// fields read as `zone`'s wall clock; day by day from `t`'s date there, for at most eight
    /// years (29 February on a Monday comes round within that).
    fn search(&self, t: DateTime<Utc>, forward: bool, zone: Tz) -> Option<DateTime<Utc>> {
        let mut date = t.with_timezone(&zone).date_naive();
        for _ in 0..366 * 8 {
            if self.day_matches(date) {
                let minutes: Box<dyn Iterator<Item = u32>> = if forward {
                    Box::new(0..24 * 60)
                } else {
                    Box::new((0..24 * 60).rev())
                };
                for m in minutes {
                    let (h, min) = (m / 60, m % 60);
                    if self.hours & (1 << h) == 0 || self.minutes & (1 << min) == 0 {
                        continue;
                    }
                    // A wall-clock minute the clocks skip does not run; one they repeat runs
                    // the first time.
                    let at = match zone.from_local_datetime(&date.and_hms_opt(h, min, 0)?) {
                        LocalResult::Single(at) => at,
                        LocalResult::Ambiguous(first, _) => first,
                        LocalResult::None => continue,
                    }
                    .with_timezone(&Utc);
                    if (forward && at > t) || (!forward && at <= t) {
                        return Some(at);
                    }
                }
            }
            date = if forward {
                date.succ_opt()?
            } else {
                date.pred_opt()?
            };
        }
        None
    }
}

/// A compile-time error about a field (a `const fn` panics only with literals).
macro_rules! field_panic {
    ($why:literal) => {
        panic!(concat!("cron schedule: ", $why))
    };
}

const NONE: &[&str] = &[];
const MONTHS: &[&str] = &[
    "", "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const fn macro_expansion(b: &[u8]) -> Option<&'static str> {
    if eq_ignore_case(b, b"@hourly") {
        Some("0 * * * *")
    } else if eq_ignore_case(b, b"@daily") || eq_ignore_case(b, b"@midnight") {
        Some("0 0 * * *")
    } else if eq_ignore_case(b, b"@weekly") {
        Some("0 0 * * 0")
    } else if eq_ignore_case(b, b"@monthly") {
        Some("0 0 1 * *")
    } else if eq_ignore_case(b, b"@yearly") || eq_ignore_case(b, b"@annually") {
        Some("0 0 1 1 *")
    } else if !b.is_empty() && b[0] == b'@' {
        panic!("cron schedule: the shorthands are @hourly, @daily, @weekly, @monthly, @yearly")
    } else {
        None
    }
}

const fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if !a[i].eq_ignore_ascii_case(&b[i]) {
            return false;
        }
        i += 1;
    }
    true
}

const fn is_star(b: &[u8], (start, end): (usize, usize)) -> bool {
    end == start + 1 && b[start] == b'*'
}

/// The bit set of one field, `b[start..end]`, with values `min..=max` (names from `names`,
/// indexed by value).
const fn parse_field(
    b: &[u8],
    (start, end): (usize, usize),
    min: u64,
    max: u64,
    names: &[&str],
) -> u64 {
    let mut bits: u64 = 0;
    let mut i = start;
    while i < end {
        // One item: up to the next comma.
        let mut item_end = i;
        while item_end < end && b[item_end] != b',' {
            item_end += 1;
        }
        if item_end == i {
            field_panic!("an empty item (two commas, or a trailing one)");
        }
        // `/step`
        let mut slash = i;
        while slash < item_end && b[slash] != b'/' {
            slash += 1;
        }
        let step = if slash < item_end {
            let (n, used) = number_or_name(b, slash + 1, item_end, NONE);
            if used != item_end || n == 0 {
                field_panic!("a step `/n` needs a number of at least 1");
            }
            n
        } else {
            1
        };
        let (lo, hi) = if slash == i + 1 && b[i] == b'*' {
            (min, max)
        } else {
            let (lo, used) = number_or_name(b, i, slash, names);
            if used == slash {
                // `a/n` means a to the end of the range, every n.
                (lo, if step > 1 { max } else { lo })
            } else if b[used] == b'-' {
                let (hi, used) = number_or_name(b, used + 1, slash, names);
                if used != slash {
                    field_panic!("a range is `a-b`");
                }
                (lo, hi)
            } else {
                field_panic!("an item is `*`, `n`, `a-b`, `*/n` or `a-b/n`")
            }
        };
        if lo < min || hi > max {
            field_panic!("a value is out of the field's range");
        }
        if lo > hi {
            field_panic!("a range goes from low to high");
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
        i = item_end + 1;
    }
    bits
}

/// A number, or one of `names` (case-insensitive; its index is its value), from `b[i..end]`;
/// returns it and where it ended.
const fn number_or_name(b: &[u8], i: usize, end: usize, names: &[&str]) -> (u64, usize) {
    if i < end && b[i].is_ascii_digit() {
        let mut n: u64 = 0;
        let mut j = i;
        while j < end && b[j].is_ascii_digit() {
            n = n * 10 + (b[j] - b'0') as u64;
            if n > 1000 {
                field_panic!("a value is out of the field's range");
            }
            j += 1;
        }
        return (n, j);
    }
    let mut k = 0;
    while k < names.len() {
        let name = names[k].as_bytes();
        if !name.is_empty() && i + name.len() <= end {
            let mut same = true;
            let mut j = 0;
            while j < name.len() {
                if b[i + j].to_ascii_uppercase() != name[j] {
                    same = false;
                }
                j += 1;
            }
            if same {
                return (k as u64, i + name.len());
            }
        }
        k += 1;
    }
    field_panic!("expected a number (or a month or weekday name)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_ticks_at_multiples_of_its_period() {
        let s = Schedule::every("15m");
        assert_eq!(s, Schedule::Every { secs: 900 });
        let t = at("2026-12-04T10:22:31Z");
        assert_eq!(s.latest_at_or_before(t), at("2026-12-04T10:15:00Z"));
        assert_eq!(s.next_after(t), at("2026-12-04T10:30:00Z"));
        assert_eq!(
            s.next_after(at("2026-12-04T10:30:00Z")),
            at("2026-12-04T10:45:00Z")
        );
        assert_eq!(Schedule::every("1h30m"), Schedule::Every { secs: 5400 });
        assert_eq!(Schedule::every("1s"), Schedule::Every { secs: 1 });
    }

    #[test]
    fn cron_expressions_find_their_next_and_previous_minutes() {
        let s = Schedule::cron("*/15 9-17 * * MON-FRI");
        // Friday 17:50 → Monday 09:00.
        let fri = at("2026-12-04T17:50:00Z");
        assert_eq!(s.next_after(fri), at("2026-12-07T09:00:00Z"));
        assert_eq!(s.latest_at_or_before(fri), at("2026-12-04T17:45:00Z"));
        assert_eq!(
            Schedule::cron("@daily").next_after(fri),
            at("2026-12-05T00:00:00Z")
        );
        // Day-of-month and weekday both restricted: either matches.
        let s = Schedule::cron("0 12 1 * sun");
        assert_eq!(
            s.next_after(at("2026-12-04T00:00:00Z")),
            at("2026-12-06T12:00:00Z")
        );
        // 29 February only.
        let s = Schedule::cron("0 0 29 2 *");
        assert_eq!(
            s.next_after(fri),
            at("2028-02-29T00:00:00Z"),
            "the next leap day"
        );
        let s = Schedule::cron("5,10-12/2 0 * jan,Dec 7");
        assert_eq!(s.next_after(fri), at("2026-12-06T00:05:00Z"), "7 is Sunday");
    }

    #[test]
    fn a_time_zone_moves_the_ticks_with_its_clock_changes() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let s = Schedule::cron("0 3 * * *");
        // Winter (CET, UTC+1), then summer (CEST, UTC+2).
        assert_eq!(
            s.next_after_in(at("2026-12-04T10:00:00Z"), paris),
            at("2026-12-05T02:00:00Z")
        );
        assert_eq!(
            s.next_after_in(at("2027-07-01T10:00:00Z"), paris),
            at("2027-07-02T01:00:00Z")
        );
        assert_eq!(
            s.latest_at_or_before_in(at("2026-12-05T01:59:00Z"), paris),
            at("2026-12-04T02:00:00Z")
        );
        // 02:30 does not exist on 28 March 2027 (02:00 → 03:00): that day has no run.
        let s = Schedule::cron("30 2 * * *");
        assert_eq!(
            s.next_after_in(at("2027-03-27T02:00:00Z"), paris),
            at("2027-03-29T00:30:00Z")
        );
        // 02:30 happens twice on 25 October 2026 (03:00 → 02:00): it runs the first time only.
        let first = s.next_after_in(at("2026-10-24T12:00:00Z"), paris);
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        assert_eq!(s.next_after_in(first, paris), at("2026-10-26T01:30:00Z"));
        assert_eq!(
            s.latest_at_or_before_in(at("2026-10-25T01:45:00Z"), paris),
            first
        );
    }

    #[test]
    #[should_panic(expected = "divide 24h")]
    fn a_period_that_does_not_divide_a_day_is_refused() {
        let _ = Schedule::every("7m");
    }

    #[test]
    #[should_panic(expected = "out of the field's range")]
    fn an_hour_past_23_is_refused() {
        let _ = Schedule::cron("0 24 * * *");
    }

    #[test]
    #[should_panic(expected = "five fields")]
    fn four_fields_are_refused() {
        let _ = Schedule::cron("* * * *");
    }
}
