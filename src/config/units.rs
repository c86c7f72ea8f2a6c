//! Parsers for the value syntaxes of profiles: bitrates, resolutions, frame rates.
//!
//! Pure functions shared by validation (load time) and the media engine (run time), so a
//! value that passes `amps check` is exactly a value the engine understands.

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
    fn framerates() {
        assert_eq!(parse_framerate("25"), Ok((25, 1)));
        assert_eq!(parse_framerate("29.97"), Ok((2997, 100)));
        assert_eq!(parse_framerate("30000/1001"), Ok((30000, 1001)));
        for bad in ["", "0", "-1", "1/0", "1000", "fast"] {
            assert!(parse_framerate(bad).is_err(), "{bad} accepted");
        }
    }
}
