//! Validation of user input that is not tied to one command: names, durations, globs.

use globset::{Glob, GlobMatcher};
use jiff::{SignedDuration, Timestamp};

use crate::{Error, Result};

/// Backup, restore and schedule names are DNS-1123 labels, so they work as object names and in keys.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 63 {
        Some("must be at most 63 characters")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Some("may contain only lowercase letters, digits and '-'")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() || !name.as_bytes()[name.len() - 1].is_ascii_alphanumeric() {
        Some("must start and end with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::invalid(what, name, format!("{r} (a DNS-1123 label, e.g. nightly-2024-01-01)"))),
        None => Ok(()),
    }
}

/// Parses a duration like `720h`, `1h30m`, `90s` or ISO 8601 `P30D`. Negative durations are refused.
pub fn parse_duration(what: &'static str, text: &str) -> Result<SignedDuration> {
    let d: SignedDuration = text
        .trim()
        .parse()
        .map_err(|_| Error::invalid(what, text, "not a duration; use e.g. 720h, 1h30m, 30m or 0s"))?;
    if d.is_negative() {
        return Err(Error::invalid(what, text, "must not be negative"));
    }
    Ok(d)
}

/// The expiration of something that started at `start` and lives for `ttl`; `None` when it never expires.
pub fn expiration(start: Timestamp, ttl: SignedDuration) -> Option<Timestamp> {
    if ttl.is_zero() { None } else { start.checked_add(ttl).ok() }
}

/// A name made from a prefix and a UTC time: `<prefix>-<YYYYMMDDhhmmss>`.
pub fn timestamped_name(prefix: &str, at: Timestamp) -> String {
    format!("{prefix}-{}", at.strftime("%Y%m%d%H%M%S"))
}

/// A glob over names (`*`, `?`, `[a-z]`). Literal names are globs too.
#[derive(Clone, Debug)]
pub struct NamePattern {
    text: String,
    matcher: GlobMatcher,
}

impl NamePattern {
    pub fn parse(what: &'static str, text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::invalid(what, text, "empty pattern"));
        }
        let glob =
            Glob::new(text).map_err(|e| Error::invalid(what, text, format!("not a valid glob: {}", e.kind())))?;
        Ok(NamePattern { text: text.to_string(), matcher: glob.compile_matcher() })
    }

    /// True when the pattern names exactly one thing (no glob characters).
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?', '[', ']', '{', '}'])
    }

    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Parses a list of patterns given as repeated flags or comma lists.
pub fn parse_patterns(what: &'static str, items: &[String]) -> Result<Vec<NamePattern>> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(|s| NamePattern::parse(what, s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "nightly", "db-2024-01-01", "x1"] {
            validate_name("backup name", ok).unwrap();
        }
        for bad in ["", "Upper", "-lead", "trail-", "a_b", "a.b", &"x".repeat(64)] {
            let err = validate_name("backup name", bad).unwrap_err().to_string();
            assert!(err.contains("backup name"), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("ttl", "720h").unwrap(), SignedDuration::from_hours(720));
        assert_eq!(parse_duration("ttl", "1h30m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(parse_duration("ttl", "0s").unwrap(), SignedDuration::ZERO);
        let err = parse_duration("ttl", "soon").unwrap_err().to_string();
        assert!(err.contains("ttl") && err.contains("720h"), "{err}");
        assert!(parse_duration("ttl", "-1h").is_err());
    }

    #[test]
    fn patterns() {
        let p = parse_patterns("namespace", &["team-*,prod".into(), "a?".into()]).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p[0].matches("team-x") && !p[0].matches("prod"));
        assert!(!p[0].is_literal() && p[1].is_literal());
        assert!(p[2].matches("ab") && !p[2].matches("abc"));
        assert!(parse_patterns("namespace", &["[".into()]).unwrap_err().to_string().contains("glob"));
    }

    #[test]
    fn timestamped_names() {
        let t: Timestamp = "2024-03-05T06:07:08Z".parse().unwrap();
        assert_eq!(timestamped_name("nightly", t), "nightly-20240305060708");
    }
}
