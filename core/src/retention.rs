//! Which backups of a series to keep: every one for a while, then one per hour, then one per day
//! (the newest of each hour or day), and never the newest of all. Continuous backups of a
//! workspace are pruned with it; with incremental storage a point in time costs only what changed.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use crate::input::parse_duration;
use crate::{Error, Result};

/// How long each tier lasts, counted from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep every backup this recent.
    pub all: SignedDuration,
    /// Then the newest of each hour, up to this age.
    pub hourly: SignedDuration,
    /// Then the newest of each day (UTC), up to this age.
    pub daily: SignedDuration,
}

impl Default for Retention {
    /// Every change for 24 h, hourly for 7 days, daily for 30 days.
    fn default() -> Self {
        Retention {
            all: SignedDuration::from_hours(24),
            hourly: SignedDuration::from_hours(24 * 7),
            daily: SignedDuration::from_hours(24 * 30),
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = Error;
    /// `ALL,HOURLY,DAILY`, e.g. `24h,168h,720h`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [all, hourly, daily] = parts.as_slice() else {
            return Err(Error::invalid("--retention", s, "expected ALL,HOURLY,DAILY durations, e.g. 24h,168h,720h"));
        };
        let r = Retention {
            all: parse_duration("--retention", all)?,
            hourly: parse_duration("--retention", hourly)?,
            daily: parse_duration("--retention", daily)?,
        };
        if r.hourly < r.all || r.daily < r.hourly {
            return Err(Error::invalid("--retention", s, "each tier must last at least as long as the one before"));
        }
        Ok(r)
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = |d: SignedDuration| d.as_secs() / 3600;
        write!(f, "{}h,{}h,{}h", h(self.all), h(self.hourly), h(self.daily))
    }
}

impl Retention {
    /// The indexes of `times` to keep at `now`. `times` may be in any order.
    pub fn keep(&self, times: &[Timestamp], now: Timestamp) -> BTreeSet<usize> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|a, b| times[*b].cmp(&times[*a]));
        let mut keep = BTreeSet::new();
        let mut hours = BTreeSet::new();
        let mut days = BTreeSet::new();
        for (rank, &i) in order.iter().enumerate() {
            let t = times[i];
            let age = now.duration_since(t);
            let secs = t.as_second();
            let (hour, day) = (secs.div_euclid(3600), secs.div_euclid(86_400));
            // An hour (or day) is represented by the newest backup kept in it, by whichever tier.
            let kept = rank == 0
                || age <= self.all
                || (age <= self.hourly && !hours.contains(&hour))
                || (age > self.hourly && age <= self.daily && !days.contains(&day));
            if kept {
                keep.insert(i);
                hours.insert(hour);
                days.insert(day);
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn keeps_every_change_then_hourly_then_daily() {
        let now = at("2026-12-02T12:00:00Z");
        let times = vec![
            at("2026-12-02T11:59:00Z"), // 0: recent
            at("2026-12-02T11:58:00Z"), // 1: recent
            at("2026-12-01T10:50:00Z"), // 2: 25 h old, newest of its hour
            at("2026-12-01T10:10:00Z"), // 3: same hour, older: dropped
            at("2026-11-30T09:00:00Z"), // 4: another hour: kept
            at("2026-11-20T18:00:00Z"), // 5: 12 days, newest of its day
            at("2026-11-20T06:00:00Z"), // 6: same day: dropped
            at("2026-10-01T00:00:00Z"), // 7: 62 days: dropped
        ];
        let keep = Retention::default().keep(&times, now);
        assert_eq!(keep.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 4, 5]);
    }

    #[test]
    fn an_hour_or_day_across_a_tier_boundary_keeps_one_backup() {
        let now = at("2026-12-02T12:30:00Z");
        let times = vec![
            at("2026-12-01T12:40:00Z"), // 0: 23 h 50 min: every change
            at("2026-12-01T12:10:00Z"), // 1: 24 h 20 min, same hour as 0: dropped
            at("2026-11-25T23:00:00Z"), // 2: 6 d 13.5 h: hourly
            at("2026-11-25T01:00:00Z"), // 3: 7 d 11.5 h, same day as 2: dropped
        ];
        let keep = Retention::default().keep(&times, now);
        assert_eq!(keep.into_iter().collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn never_drops_the_newest() {
        let now = at("2026-12-02T12:00:00Z");
        let keep = Retention::default().keep(&[at("2025-01-01T00:00:00Z"), at("2024-01-01T00:00:00Z")], now);
        assert_eq!(keep.into_iter().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn parses_and_refuses_bad_tiers() {
        let r: Retention = "1h,2h,3h".parse().unwrap();
        assert_eq!(r.to_string(), "1h,2h,3h");
        assert_eq!(Retention::default().to_string(), "24h,168h,720h");
        let err = "1h,2h".parse::<Retention>().unwrap_err().to_string();
        assert!(err.contains("ALL,HOURLY,DAILY"), "{err}");
        let err = "48h,24h,720h".parse::<Retention>().unwrap_err().to_string();
        assert!(err.contains("at least as long"), "{err}");
    }
}
