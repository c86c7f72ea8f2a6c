//! ISO-8601 timestamps as written in the config and the API.
//!
//! Accepted: `2024-05-04T18:00:00Z`, `2024-05-04T18:00:00+02:00`, fractional seconds, a
//! space instead of `T`, and minutes without seconds (`2024-05-04T18:00Z`). A time without a
//! zone is refused: a guide that silently shifts by the server's zone is worse than an error.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in time with the offset it was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<FixedOffset>);

impl Timestamp {
    pub fn utc(&self) -> DateTime<Utc> {
        self.0.with_timezone(&Utc)
    }

    pub fn parse(s: &str) -> Result<Timestamp, String> {
        let t = s.trim();
        if let Ok(d) = DateTime::parse_from_rfc3339(t) {
            return Ok(Timestamp(d));
        }
        let with_t = t.replacen(' ', "T", 1);
        let candidate = with_t.replace(['Z', 'z'], "+00:00");
        for fmt in [
            "%Y-%m-%dT%H:%M:%S%.f%:z",
            "%Y-%m-%dT%H:%M%:z",
            "%Y-%m-%dT%H:%M%#z",
        ] {
            if let Ok(d) = DateTime::parse_from_str(&candidate, fmt) {
                return Ok(Timestamp(d));
            }
        }
        if chrono::NaiveDateTime::parse_from_str(&with_t, "%Y-%m-%dT%H:%M:%S").is_ok()
            || chrono::NaiveDateTime::parse_from_str(&with_t, "%Y-%m-%dT%H:%M").is_ok()
        {
            return Err(format!(
                "{s:?} has no time zone: add `Z` for UTC or an offset like `+01:00`"
            ));
        }
        Err(format!(
            "{s:?} is not an ISO-8601 time (expected e.g. 2024-05-04T18:00:00Z)"
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ISO-8601 time such as 2024-05-04T18:00:00Z")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_iso_forms() {
        for (input, want) in [
            ("2024-05-04T18:00:00Z", "2024-05-04T18:00:00Z"),
            ("2024-05-04T18:00:00+02:00", "2024-05-04T18:00:00+02:00"),
            ("2024-05-04 18:00:00Z", "2024-05-04T18:00:00Z"),
            ("2024-05-04T18:00Z", "2024-05-04T18:00:00Z"),
            ("2024-05-04T18:00:00.5Z", "2024-05-04T18:00:00.500Z"),
        ] {
            assert_eq!(
                Timestamp::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_missing_zone_and_garbage_with_a_reason() {
        let e = Timestamp::parse("2024-05-04T18:00:00").unwrap_err();
        assert!(e.contains("no time zone"), "{e}");
        let e = Timestamp::parse("tomorrow").unwrap_err();
        assert!(e.contains("not an ISO-8601 time"), "{e}");
    }

    #[test]
    fn round_trips_through_json() {
        let t: Timestamp = serde_json::from_str("\"2024-05-04T18:00:00Z\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2024-05-04T18:00:00Z\""
        );
    }
}
