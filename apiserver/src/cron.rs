//! CronJob schedules: kube's grammar (robfig/cron's `ParseStandard`, which kube-apiserver
//! validates with and kube-controller-manager runs: five fields, `*`, `?`, lists, ranges,
//! steps, `N/step`, month and weekday names, the `@hourly`-style descriptors and `@every`),
//! with its error texts; time zones by IANA name; and the times a schedule fires.
//!
//! `croner` finds the matching wall-clock times; the walk along the time line is robfig's: a
//! schedule fires at every instant whose wall clock in the zone matches it, so a time that a
//! clock jump skips does not fire that day and a time a clock repeats fires twice.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

pub use chrono_tz::Tz;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
    /// The zone a `TZ=`/`CRON_TZ=` prefix named (kube refuses those in `spec.schedule`).
    pub zone: Option<Tz>,
}

#[derive(Clone, Debug)]
enum Kind {
    Cron(Box<Cron>),
    /// `@every D`: D (whole seconds, at least one) after the previous time.
    Every(Duration),
}

/// Field bounds and names, as robfig's.
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// One field: the values it takes, and whether it was a star (`*` or `?` without a step
/// above one: a star day field leaves the day to the other one, as in Vixie cron).
struct Field {
    bits: u64,
    star: bool,
}

fn must_parse_int(expr: &str) -> Result<u32, String> {
    match expr.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => u32::try_from(n).map_err(|_| {
            format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: value out of range")
        }),
        Err(_) => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: invalid syntax"
        )),
    }
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u32, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(expr)
}

/// One comma-separated part of a field: `*`, `?`, `N`, `N-M`, each with an optional `/step`.
fn range(expr: &str, b: &Bounds, field: &mut Field) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut star);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (start, end, star) = (b.min, b.max, true);
    } else {
        start = int_or_name(low_and_high[0], b)?;
        end = match low_and_high.len() {
            1 => start,
            2 => int_or_name(low_and_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        star = false;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut v = start;
    while v <= end {
        field.bits |= 1 << v;
        v += step;
    }
    field.star |= star;
    Ok(())
}

fn field(text: &str, b: &Bounds) -> Result<Field, String> {
    let mut f = Field {
        bits: 0,
        star: false,
    };
    for part in text.split(',').filter(|p| !p.is_empty()) {
        range(part, b, &mut f)?;
    }
    Ok(f)
}

/// The field as croner reads it: `*`, or the values it takes.
fn render(f: &Field, b: &Bounds, out: &mut String) {
    if f.star {
        out.push('*');
        return;
    }
    let mut first = true;
    for v in b.min..=b.max {
        if f.bits & (1 << v) != 0 {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{v}");
        }
    }
}

/// Go's `time.ParseDuration`, for `@every`.
fn go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::zero());
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let num: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        nanos += num * scale;
        rest = &rest[unit_end..];
    }
    if nanos > 9.2e18 {
        return Err(bad());
    }
    let d = Duration::nanoseconds(nanos as i64);
    Ok(if neg { -d } else { d })
}

/// A time zone by its IANA name, as Go's `time.LoadLocation` finds it (`UTC` included).
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {name}"))
}

/// kube-apiserver's checks of `spec.timeZone`: the messages of its 422.
pub fn zone_errors(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("timeZone must be nil or non-empty string".into());
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 14
            && p != "."
            && p != ".."
            && !p.starts_with('-')
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !name.split('/').all(part_ok) {
        return Some(format!("unknown time zone {name}"));
    }
    if name.eq_ignore_ascii_case("Local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    zone(name).err()
}

impl Schedule {
    /// Parse `spec` as kube does (`cron.ParseStandard`); `Err` is its message.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut spec = spec;
        let mut tz = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let Some(i) = spec.find(' ') else {
                return Err("missing fields".into());
            };
            let eq = spec.find('=').unwrap_or(0);
            let name = &spec[eq + 1..i];
            tz = Some(zone(name).map_err(|e| format!("provided bad location {name}: {e}"))?);
            spec = spec[i..].trim();
        }
        let text = if let Some(d) = spec.strip_prefix('@') {
            match d {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    if let Some(every) = spec.strip_prefix("@every ") {
                        let d = go_duration(every)
                            .map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
                        // Below a second is a second; fractions of one are dropped.
                        let d = Duration::seconds(d.num_seconds().max(1));
                        return Ok(Schedule {
                            kind: Kind::Every(d),
                            zone: tz,
                        });
                    }
                    return Err(format!("unrecognized descriptor: {spec}"));
                }
            }
            .to_string()
        } else {
            spec.to_string()
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let bounds = [&MINUTES, &HOURS, &DOM, &MONTHS, &DOW];
        let mut pattern = String::new();
        for (i, (f, b)) in fields.iter().zip(bounds).enumerate() {
            let parsed = field(f, b)?;
            if i > 0 {
                pattern.push(' ');
            }
            render(&parsed, b, &mut pattern);
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&pattern)
            .map_err(|e| format!("{e}"))?;
        Ok(Schedule {
            kind: Kind::Cron(Box::new(cron)),
            zone: tz,
        })
    }

    /// The first time after `t` the schedule fires in `tz` (robfig's `Next`); `None` when it
    /// never does (the 31st of February).
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let t = trunc(t);
        match &self.kind {
            Kind::Every(d) => Some(t + *d),
            Kind::Cron(c) => walk(c, t, tz, true),
        }
    }

    /// The latest time in `(after, upto]` the schedule fires in `tz`, and how many times it
    /// fires there, counted up to `cap + 1` (kube's controller treats more than 100 missed
    /// times as too many).
    pub fn missed(
        &self,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
        tz: Tz,
        cap: usize,
    ) -> (Option<DateTime<Utc>>, usize) {
        let mut latest = None;
        let mut count = 0;
        let mut t = after;
        while let Some(n) = self.next_after(t, tz) {
            if n > upto {
                return (latest, count);
            }
            latest = Some(n);
            count += 1;
            if count > cap {
                break;
            }
            t = n;
        }
        if count <= cap {
            return (latest, count);
        }
        // Too many to walk: the latest one is found from `upto` backwards.
        let last = match &self.kind {
            Kind::Every(d) => {
                let start = trunc(after);
                let step = d.num_seconds().max(1);
                let steps = (upto - start).num_seconds() / step;
                Some(start + Duration::seconds(steps * step))
            }
            Kind::Cron(c) => walk(c, trunc(upto), tz, false),
        };
        (last.filter(|l| Some(*l) >= latest).or(latest), count)
    }
}

/// `t` without its fraction of a second.
fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    t.with_nanosecond(0).unwrap_or(t)
}

fn offset(tz: Tz, t: DateTime<Utc>) -> Duration {
    Duration::seconds(i64::from(
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    ))
}

/// The first instant in `(a, b]` whose offset differs from `off` (a second's precision),
/// probing a day at a time (offsets change far less often than daily).
fn change_between(
    tz: Tz,
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    off: Duration,
) -> Option<DateTime<Utc>> {
    let day = Duration::days(1);
    let mut lo = a;
    while lo < b {
        let hi = (lo + day).min(b);
        if offset(tz, hi) != off {
            // Offset `off` at `lo`, another at `hi`: narrow to the first second of the other.
            let (mut l, mut h) = (lo, hi);
            while h - l > Duration::seconds(1) {
                let mid = l + (h - l) / 2;
                if offset(tz, mid) == off {
                    l = mid;
                } else {
                    h = mid;
                }
            }
            return Some(h);
        }
        lo = hi;
    }
    None
}

/// The last instant in `[a, b)` whose offset differs from `off`, likewise.
fn change_before(
    tz: Tz,
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    off: Duration,
) -> Option<DateTime<Utc>> {
    let day = Duration::days(1);
    let mut hi = b;
    while hi > a {
        let lo = (hi - day).max(a);
        if offset(tz, lo) != off {
            let (mut l, mut h) = (lo, hi);
            while h - l > Duration::seconds(1) {
                let mid = l + (h - l) / 2;
                if offset(tz, mid) == off {
                    h = mid;
                } else {
                    l = mid;
                }
            }
            return Some(l);
        }
        hi = lo;
    }
    None
}

/// Walk the time line from `t` (forward: the first firing after `t`; backward: the last at
/// or before it), a stretch of one UTC offset at a time: within one the wall clock is the
/// time line shifted, so croner's wall-clock search answers, unless the answer lies past
/// the stretch, where the walk goes on with the next offset.
fn walk(c: &Cron, t: DateTime<Utc>, tz: Tz, forward: bool) -> Option<DateTime<Utc>> {
    let mut s = t;
    let mut inclusive = !forward;
    // Each step crosses one offset change; a schedule never fires across this many.
    for _ in 0..1000 {
        let off = offset(tz, s);
        let wall: NaiveDateTime = s.naive_utc() + off;
        let n = if forward {
            c.find_next_occurrence(&wall, inclusive).ok()?
        } else {
            c.find_previous_occurrence(&wall, inclusive).ok()?
        };
        let cand = Utc.from_utc_datetime(&(n - off));
        if forward {
            match change_between(tz, s, cand, off) {
                None => return Some(cand),
                Some(h) => s = h,
            }
        } else {
            match change_before(tz, cand, s, off) {
                None => return Some(cand),
                Some(l) => s = l,
            }
        }
        inclusive = true;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn next(spec: &str, from: &str, tz: &str) -> String {
        let s = Schedule::parse(spec).expect("parses");
        s.next_after(at(from), zone(tz).expect("zone"))
            .expect("fires")
            .with_timezone(&zone(tz).expect("zone"))
            .to_rfc3339()
    }

    #[test]
    fn grammar_and_messages_are_kubes() {
        for ok in [
            "* * * * *",
            "*/5 * * * *",
            "0 0 * * MON-FRI",
            "0 12 1 JAN,jul *",
            "5/15 * * * *",
            "0 0 ? * ?",
            "1-10/3 * * * *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@every 1h30m",
            "59 23 31 2 *",
        ] {
            assert!(
                Schedule::parse(ok).is_ok(),
                "{ok}: {:?}",
                Schedule::parse(ok).err()
            );
        }
        for (bad, msg) in [
            ("61 * * * *", "end of range (61) above maximum (59): 61"),
            ("* 24 * * *", "end of range (24) above maximum (23): 24"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
            (
                "0 * * * * *",
                "expected exactly 5 fields, found 6: [0 * * * * *]",
            ),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            (
                "L * * * *",
                "failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax",
            ),
            (
                "* * * * 1#2",
                "failed to parse int from 1#2: strconv.Atoi: parsing \"1#2\": invalid syntax",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("", "empty spec string"),
        ] {
            assert_eq!(Schedule::parse(bad).err().as_deref(), Some(msg), "{bad}");
        }
        // A zone prefix parses (kube's validation refuses it separately).
        let s = Schedule::parse("CRON_TZ=Europe/Berlin 0 3 * * *").expect("tz prefix");
        assert_eq!(s.zone, Some(chrono_tz::Europe::Berlin));
        assert!(Schedule::parse("TZ=Nowhere/Place 0 3 * * *").is_err());
    }

    #[test]
    fn next_times() {
        assert_eq!(
            next("* * * * *", "2026-03-01T10:00:00Z", "UTC"),
            "2026-03-01T10:01:00+00:00"
        );
        assert_eq!(
            next("* * * * *", "2026-03-01T10:00:59.9Z", "UTC"),
            "2026-03-01T10:01:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-03-01T10:07:00Z", "UTC"),
            "2026-03-01T10:15:00+00:00"
        );
        // Weekdays: 2026-03-06 is a Friday.
        assert_eq!(
            next("0 9 * * MON-FRI", "2026-03-06T10:00:00Z", "UTC"),
            "2026-03-09T09:00:00+00:00"
        );
        // Day of month and weekday both restricted: either one (Vixie cron).
        assert_eq!(
            next("0 0 13 * FRI", "2026-03-01T00:00:00Z", "UTC"),
            "2026-03-06T00:00:00+00:00"
        );
        // A star day field leaves the day to the other.
        assert_eq!(
            next("0 0 * * SUN", "2026-03-01T00:00:00Z", "UTC"),
            "2026-03-08T00:00:00+00:00"
        );
        assert_eq!(
            next("@monthly", "2026-03-01T00:00:00Z", "UTC"),
            "2026-04-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", "2026-03-01T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@every 90s", "2026-03-01T00:00:00.5Z", "UTC"),
            "2026-03-01T00:01:30+00:00"
        );
        // In a zone: 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(
            next("0 9 * * *", "2026-03-01T01:00:00Z", "Asia/Tokyo"),
            "2026-03-02T09:00:00+09:00"
        );
        // Never (February has no 31st).
        let never = Schedule::parse("0 0 31 2 *").expect("parses");
        assert_eq!(
            never.next_after(at("2026-01-01T00:00:00Z"), chrono_tz::UTC),
            None
        );
    }

    #[test]
    fn daylight_saving_time_as_robfig() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT. 02:30 does not exist that day.
        assert_eq!(
            next("30 2 * * *", "2026-03-08T05:00:00Z", "America/New_York"),
            "2026-03-09T02:30:00-04:00"
        );
        // An hourly schedule goes from 01:00 EST to 03:00 EDT, an hour later.
        assert_eq!(
            next("0 * * * *", "2026-03-08T06:00:00Z", "America/New_York"),
            "2026-03-08T03:00:00-04:00"
        );
        // 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice, and fires twice.
        let first = next("30 1 * * *", "2026-11-01T04:00:00Z", "America/New_York");
        assert_eq!(first, "2026-11-01T01:30:00-04:00");
        let second = next("30 1 * * *", "2026-11-01T05:30:00Z", "America/New_York");
        assert_eq!(second, "2026-11-01T01:30:00-05:00");
        let third = next("30 1 * * *", "2026-11-01T06:30:00Z", "America/New_York");
        assert_eq!(third, "2026-11-02T01:30:00-05:00");
        // From inside the first pass of the repeated hour, the second pass's 01:10 is next.
        assert_eq!(
            next("10 1 * * *", "2026-11-01T05:20:00Z", "America/New_York"),
            "2026-11-01T01:10:00-05:00"
        );
        // Lord Howe moves by half an hour.
        assert_eq!(
            next("15 2 * * *", "2026-10-03T14:00:00Z", "Australia/Lord_Howe"),
            "2026-10-05T02:15:00+11:00"
        );
    }

    #[test]
    fn missed_times_are_counted_and_the_latest_found() {
        let s = Schedule::parse("*/10 * * * *").expect("parses");
        let (latest, n) = s.missed(
            at("2026-03-01T10:00:00Z"),
            at("2026-03-01T10:35:00Z"),
            chrono_tz::UTC,
            100,
        );
        assert_eq!((latest, n), (Some(at("2026-03-01T10:30:00Z")), 3));
        let (latest, n) = s.missed(
            at("2026-03-01T10:00:00Z"),
            at("2026-03-01T10:09:59Z"),
            chrono_tz::UTC,
            100,
        );
        assert_eq!((latest, n), (None, 0));
        // A week of missed minutes: too many to walk, the latest still exact.
        let s = Schedule::parse("* * * * *").expect("parses");
        let (latest, n) = s.missed(
            at("2026-03-01T00:00:00Z"),
            at("2026-03-08T12:34:56Z"),
            chrono_tz::UTC,
            100,
        );
        assert_eq!((latest, n), (Some(at("2026-03-08T12:34:00Z")), 101));
        let s = Schedule::parse("30 2 * * *").expect("parses");
        let ny = zone("America/New_York").expect("zone");
        let (latest, _) = s.missed(
            at("2025-01-01T00:00:00Z"),
            at("2026-03-08T12:00:00Z"),
            ny,
            100,
        );
        // The 8th has no 02:30 in New York: the latest is the 7th's.
        assert_eq!(latest, Some(at("2026-03-07T07:30:00Z")));
        let e = Schedule::parse("@every 1h").expect("parses");
        let (latest, n) = e.missed(
            at("2026-01-01T00:00:00Z"),
            at("2026-03-01T05:30:00Z"),
            chrono_tz::UTC,
            100,
        );
        assert_eq!((latest, n), (Some(at("2026-03-01T05:00:00Z")), 101));
    }

    #[test]
    fn zones_as_kube_checks_them() {
        assert_eq!(zone_errors("Europe/Berlin"), None);
        assert_eq!(zone_errors("UTC"), None);
        assert_eq!(zone_errors("Etc/GMT+5"), None);
        assert_eq!(
            zone_errors("Mars/Olympus").as_deref(),
            Some("unknown time zone Mars/Olympus")
        );
        assert_eq!(
            zone_errors("../etc/passwd").as_deref(),
            Some("unknown time zone ../etc/passwd")
        );
        assert!(zone_errors("Local").is_some());
        assert!(zone_errors("").is_some());
    }
}
