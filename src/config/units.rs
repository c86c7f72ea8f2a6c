//! The value syntaxes of profiles: bitrates, resolutions, frame rates, as typed values.
//!
//! A profile field such as `video_bitrate` is a [`Value`]: the text as written (kept for
//! serialization, so a config round-trips unchanged) and the typed result of parsing it
//! once, when the config (or an API body) is read. Validation reports every parse error
//! with its key path, which the loader turns into a file line; a profile that reaches the
//! engine has passed validation, and the engine reads the typed value, never the text.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value syntax: how its text is parsed.
pub trait Syntax: Sized {
    fn parse(text: &str) -> Result<Self, String>;
}

/// A profile value: its text and what parsing it gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Value<T> {
    text: String,
    parsed: Result<T, String>,
}

impl<T: Syntax> Value<T> {
    pub fn new(text: impl Into<String>) -> Value<T> {
        let text = text.into();
        let parsed = T::parse(&text);
        Value { text, parsed }
    }
}

impl<T> Value<T> {
    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The typed value (None only for a value validation refuses).
    pub fn get(&self) -> Option<&T> {
        self.parsed.as_ref().ok()
    }

    /// Why the text is not a valid value.
    pub fn error(&self) -> Option<&str> {
        self.parsed.as_ref().err().map(String::as_str)
    }
}

impl<T> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T: Syntax> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A YAML or JSON scalar: `framerate: 25` is as good as `framerate: "25"`.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Int(u64),
            Float(f64),
        }
        Ok(Value::new(match Scalar::deserialize(d)? {
            Scalar::Text(t) => t,
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(f) => f.to_string(),
        }))
    }
}

/// A bitrate in bits per second (`2500k`, `2.5M`, `128000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitrate(pub u64);

impl Bitrate {
    pub fn bps(self) -> u64 {
        self.0
    }
}

impl Syntax for Bitrate {
    fn parse(text: &str) -> Result<Self, String> {
        parse_bitrate(text).map(Bitrate)
    }
}

impl Syntax for Resolution {
    fn parse(text: &str) -> Result<Self, String> {
        parse_resolution(text)
    }
}

/// A frame rate as a fraction (`25`, `29.97`, `30000/1001`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRate {
    pub num: i32,
    pub den: i32,
}

impl Syntax for FrameRate {
    fn parse(text: &str) -> Result<Self, String> {
        parse_framerate(text).map(|(num, den)| FrameRate { num, den })
    }
}

/// `2500k`, `2.5M`, `128000` -> bits per second.
pub fn parse_bitrate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000.0),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000.0),
        Some((i, 'g' | 'G')) => (&t[..i], 1_000_000_000.0),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0 && !num.starts_with('+'))
        .ok_or_else(|| format!("{s:?} is not a bitrate (expected e.g. 2500k or 2.5M)"))?;
    let bps = v * mult;
    if !(1_000.0..=1_000_000_000.0).contains(&bps) {
        return Err(format!("{s:?} is out of range (1k to 1000M)"));
    }
    Ok(bps.round() as u64)
}

/// A requested output size; a missing side keeps the source's aspect ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// `1280x720`, `x720` (keep aspect ratio from the height) or `1280x` (from the width).
pub fn parse_resolution(s: &str) -> Result<Resolution, String> {
    let bad = || format!("{s:?} is not a resolution (expected e.g. 1280x720 or x720)");
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |v: &str| -> Result<Option<u32>, String> {
        if v.is_empty() {
            return Ok(None);
        }
        let n: u32 = v.parse().map_err(|_| bad())?;
        if !(16..=8192).contains(&n) || n % 2 != 0 {
            return Err(format!(
                "{s:?}: each side must be an even number from 16 to 8192"
            ));
        }
        Ok(Some(n))
    };
    let r = Resolution {
        width: side(w)?,
        height: side(h)?,
    };
    if r.width.is_none() && r.height.is_none() {
        return Err(bad());
    }
    Ok(r)
}

/// `25`, `29.97` or `30000/1001` -> (numerator, denominator).
pub fn parse_framerate(s: &str) -> Result<(i32, i32), String> {
    let bad = || format!("{s:?} is not a frame rate (expected e.g. 25, 29.97 or 30000/1001)");
    let t = s.trim();
    let (n, d) = if let Some((n, d)) = t.split_once('/') {
        let n: i32 = n.parse().map_err(|_| bad())?;
        let d: i32 = d.parse().map_err(|_| bad())?;
        (n, d)
    } else if let Some((_, frac)) = t.split_once('.') {
        let v: f64 = t.parse().map_err(|_| bad())?;
        let scale = 10i32.pow(frac.len().min(3) as u32);
        ((v * scale as f64).round() as i32, scale)
    } else {
        (t.parse().map_err(|_| bad())?, 1)
    };
    if n <= 0 || d <= 0 || (n as f64 / d as f64) > 240.0 {
        return Err(format!("{s:?}: frame rate must be above 0 and at most 240"));
    }
    Ok((n, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates() {
        assert_eq!(parse_bitrate("2500k"), Ok(2_500_000));
        assert_eq!(parse_bitrate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_bitrate("128000"), Ok(128_000));
        for bad in [
            "", "k", "fast", "-5k", "+5k", "0k", "5000G", "NaNk", "1e400",
        ] {
            assert!(parse_bitrate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn resolutions() {
        assert_eq!(
            parse_resolution("1280x720"),
            Ok(Resolution {
                width: Some(1280),
                height: Some(720)
            })
        );
        assert_eq!(
            parse_resolution("x720"),
            Ok(Resolution {
                width: None,
                height: Some(720)
            })
        );
        for bad in ["", "x", "720", "1281x720", "0x720", "99999x2", "axb"] {
            assert!(parse_resolution(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn values_keep_their_text_and_parse_once() {
        let v: Value<Bitrate> = serde_json::from_str("\"2.5M\"").unwrap();
        assert_eq!(v.get(), Some(&Bitrate(2_500_000)));
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"2.5M\"");
        let v: Value<FrameRate> = serde_yaml::from_str("25").unwrap();
        assert_eq!(v.get(), Some(&FrameRate { num: 25, den: 1 }));
        assert_eq!(v.text(), "25");
        let v: Value<FrameRate> = serde_yaml::from_str("29.97").unwrap();
        assert_eq!(
            v.get(),
            Some(&FrameRate {
                num: 2997,
                den: 100
            })
        );
        let v: Value<Resolution> = serde_yaml::from_str("1281x720").unwrap();
        assert_eq!(v.get(), None);
        assert!(
            v.error().unwrap().contains("even number"),
            "{:?}",
            v.error()
        );
    }

    #[test]
    fn framerates() {
        assert_eq!(parse_framerate("25"), Ok((25, 1)));
        assert_eq!(parse_framerate("29.97"), Ok((2997, 100)));
        assert_eq!(parse_framerate("30000/1001"), Ok((30000, 1001)));
        for bad in ["", "0", "-1", "1/0", "1000", "fast"] {
            assert!(parse_framerate(bad).is_err(), "{bad} accepted");
        }
    }
}
