//! When scheduled backups run: a cron expression (5 fields, or 6 with seconds) or a preset, in a
//! time zone. Pure functions of time; the controller decides with `next_run` whether one is due.
//!
//! Presets: `@hourly`, `@daily`, `@weekly` (Sunday 00:00), `@every-2-weeks` (a Sunday 00:00 at
//! least 13 days after the previous run), `@monthly` (the 1st at 00:00), `@every-2-months` (a 1st
//! at 00:00 at least 59 days after the previous run).

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Schedule {
    text: String,
    cron: Cron,
    /// Runs must be at least this far apart (the every-N presets).
    min_gap: Option<SignedDuration>,
    tz: TimeZone,
}

impl Schedule {
    /// Parses a schedule and an optional IANA time zone (default UTC).
    pub fn parse(text: &str, time_zone: Option<&str>) -> Result<Schedule> {
        let text = text.trim();
        let (pattern, min_gap) = match text {
            "@hourly" => ("0 * * * *", None),
            "@daily" | "@midnight" => ("0 0 * * *", None),
            "@weekly" => ("0 0 * * 0", None),
            "@every-2-weeks" => ("0 0 * * 0", Some(SignedDuration::from_hours(13 * 24))),
            "@monthly" => ("0 0 1 * *", None),
            "@every-2-months" => ("0 0 1 * *", Some(SignedDuration::from_hours(59 * 24))),
            p if p.starts_with('@') => {
                return Err(Error::invalid(
                    "schedule",
                    text,
                    "unknown preset; use @hourly, @daily, @weekly, @every-2-weeks, @monthly, @every-2-months or a cron expression",
                ));
            }
            p => (p, None),
        };
        let cron = CronParser::builder().seconds(Seconds::Optional).build().parse(pattern).map_err(|e| {
            Error::invalid(
                "schedule",
                text,
                format!("not a cron expression ({e}); e.g. \"0 2 * * *\" for 02:00 every day"),
            )
        })?;
        let tz = match time_zone.map(str::trim).filter(|t| !t.is_empty()) {
            None | Some("UTC") => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                Error::invalid("time zone", name, "not an IANA time zone name, e.g. Europe/Paris or America/New_York")
            })?,
        };
        Ok(Schedule { text: text.to_string(), cron, min_gap, tz })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `after`, respecting the minimum gap from `last_run`.
    pub fn next_after(&self, after: Timestamp, last_run: Option<Timestamp>) -> Option<Timestamp> {
        let earliest = match (self.min_gap, last_run) {
            (Some(gap), Some(last)) => last.checked_add(gap).ok().filter(|e| *e > after).unwrap_or(after),
            _ => after,
        };
        let zoned = earliest.to_zoned(self.tz.clone());
        self.cron.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
    }

    /// When the next run is due: the first scheduled time after the last run (or after `created`
    /// when it never ran). A time in the past means "due now" — several missed runs still run once.
    pub fn next_run(&self, created: Timestamp, last_run: Option<Timestamp>) -> Option<Timestamp> {
        self.next_after(last_run.unwrap_or(created), last_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn presets_follow_their_definitions() {
        // 2024-01-03 is a Wednesday.
        let weekly = Schedule::parse("@weekly", None).unwrap();
        assert_eq!(weekly.next_after(t("2024-01-03T10:00:00Z"), None), Some(t("2024-01-07T00:00:00Z")));
        let monthly = Schedule::parse("@monthly", None).unwrap();
        assert_eq!(monthly.next_after(t("2024-01-03T10:00:00Z"), None), Some(t("2024-02-01T00:00:00Z")));
        // every 2 weeks: after a run on Sunday the 7th, the next is Sunday the 21st, not the 14th.
        let biweekly = Schedule::parse("@every-2-weeks", None).unwrap();
        let last = t("2024-01-07T00:00:00Z");
        assert_eq!(biweekly.next_run(t("2023-12-01T00:00:00Z"), Some(last)), Some(t("2024-01-21T00:00:00Z")));
        // every 2 months: after Jan 1st, March 1st.
        let bimonthly = Schedule::parse("@every-2-months", None).unwrap();
        assert_eq!(
            bimonthly.next_run(t("2023-01-01T00:00:00Z"), Some(t("2024-01-01T00:00:00Z"))),
            Some(t("2024-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn cron_with_seconds_and_time_zones() {
        let s = Schedule::parse("*/5 * * * * *", None).unwrap();
        assert_eq!(s.next_after(t("2024-01-01T00:00:01Z"), None), Some(t("2024-01-01T00:00:05Z")));
        // 02:00 in Paris is 01:00 UTC in winter.
        let paris = Schedule::parse("0 2 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.next_after(t("2024-01-01T12:00:00Z"), None), Some(t("2024-01-02T01:00:00Z")));
    }

    #[test]
    fn missed_runs_are_due_once() {
        let daily = Schedule::parse("@daily", None).unwrap();
        // Last ran a week ago: the next run is in the past, i.e. due now; after running now, the
        // next one is tomorrow — not seven catch-up runs.
        let last = t("2024-01-01T00:00:00Z");
        let now = t("2024-01-08T12:00:00Z");
        let due = daily.next_run(t("2023-01-01T00:00:00Z"), Some(last)).unwrap();
        assert!(due <= now);
        assert_eq!(daily.next_run(t("2023-01-01T00:00:00Z"), Some(now)), Some(t("2024-01-09T00:00:00Z")));
    }

    #[test]
    fn bad_schedules_are_refused_with_a_reason() {
        assert!(Schedule::parse("@fortnightly", None).unwrap_err().to_string().contains("unknown preset"));
        assert!(Schedule::parse("61 * * * *", None).unwrap_err().to_string().contains("cron"));
        assert!(Schedule::parse("@daily", Some("Mars/Olympus")).unwrap_err().to_string().contains("time zone"));
    }
}
