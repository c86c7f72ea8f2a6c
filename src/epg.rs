//! The TV guide as XMLTV (what Kodi IPTV Simple, Jellyfin and Plex read). Pure.
//!
//! One `<channel>` per channel (id = `tvg_id`, display names, icon) and one `<programme>`
//! per program with a start time; a programme ends where the next one starts, or after a
//! default duration. A channel with no timed program gets a filler guide: blocks of the
//! default duration over the next day, from the top of the current hour, titled with its
//! untimed programs in turn (or its name). Plex hides channels without guide data, and
//! Kodi shows an empty grid. Text is escaped, and characters XML 1.0 cannot carry are
//! dropped.

use crate::config::{Program, StreamConfig};
use chrono::{DateTime, Duration, Utc};
use std::fmt::Write;
use std::sync::Arc;

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn xmltv_time(t: &chrono::DateTime<chrono::FixedOffset>) -> String {
    t.format("%Y%m%d%H%M%S %z").to_string()
}

/// How far ahead a filler guide reaches.
const FILLER_SPAN_HOURS: i64 = 24;

fn programme(
    out: &mut String,
    channel: &str,
    start: &chrono::DateTime<chrono::FixedOffset>,
    stop: &chrono::DateTime<chrono::FixedOffset>,
    title: &str,
    desc: Option<&str>,
) {
    let _ = writeln!(
        out,
        "  <programme start=\"{}\" stop=\"{}\" channel=\"{channel}\">",
        xmltv_time(start),
        xmltv_time(stop)
    );
    let _ = writeln!(out, "    <title>{}</title>", escape(title));
    if let Some(d) = desc {
        let _ = writeln!(out, "    <desc>{}</desc>", escape(d));
    }
    out.push_str("  </programme>\n");
}

/// Filler blocks for a channel without timed programs, from the top of `now`'s hour, clipped
/// to the channel's schedule window.
fn filler(
    out: &mut String,
    s: &StreamConfig,
    channel: &str,
    len: Duration,
    now: DateTime<Utc>,
    after: Option<DateTime<Utc>>,
) {
    use chrono::{DurationRound, TimeZone};
    let len = len.max(Duration::minutes(1));
    // An archived channel's past is in its guide too: catch-up picks programmes there.
    let from = (now - Duration::hours(i64::from(s.catchup_hours))).max(now - len * 5000);
    let mut t = from.duration_trunc(Duration::hours(1)).unwrap_or(from);
    if let Some(a) = after {
        t = t.max(a);
    }
    if let Some(w) = &s.schedule {
        if let Some(start) = w.start.as_ref().map(|t| t.0.with_timezone(&Utc)) {
            t = t.max(start);
        }
    }
    let end = now + Duration::hours(FILLER_SPAN_HOURS);
    let end = match s.schedule.as_ref().and_then(|w| w.end.as_ref()) {
        Some(e) => end.min(e.0.with_timezone(&Utc)),
        None => end,
    };
    let mut titles: Vec<(&str, Option<&str>)> = s
        .next_programs
        .iter()
        .filter(|p| p.start.is_none())
        .map(|p| (p.title.as_str(), p.description.as_deref()))
        .collect();
    if titles.is_empty() {
        titles.push((s.name.as_str(), None));
    }
    let utc = chrono::FixedOffset::east_opt(0).expect("zero offset");
    let mut i = 0;
    while t < end && i < 10_000 {
        let stop = (t + len).min(end);
        let (title, desc) = titles[i % titles.len()];
        let (a, b) = (
            utc.from_utc_datetime(&t.naive_utc()),
            utc.from_utc_datetime(&stop.naive_utc()),
        );
        programme(out, channel, &a, &b, title, desc);
        t = stop;
        i += 1;
    }
}

/// A channel's timed programmes in order, each with its start and stop: its own `stop`,
/// else the next one's start, or `default_len` after its own for the last (and for one the
/// next does not follow).
pub fn airings(
    s: &StreamConfig,
    default_len: Duration,
) -> Vec<(
    &Program,
    chrono::DateTime<chrono::FixedOffset>,
    chrono::DateTime<chrono::FixedOffset>,
)> {
    let mut timed: Vec<&Program> = s
        .next_programs
        .iter()
        .filter(|p| p.start.is_some())
        .collect();
    timed.sort_by_key(|p| p.start);
    (0..timed.len())
        .filter_map(|i| {
            let start = timed[i].start?.0;
            let stop = timed[i]
                .stop
                .map(|s| s.0)
                .filter(|s| *s > start)
                .or_else(|| {
                    timed
                        .get(i + 1)
                        .and_then(|n| n.start)
                        .map(|n| n.0)
                        .filter(|n| *n > start)
                })
                .unwrap_or(start + default_len);
            Some((timed[i], start, stop))
        })
        .collect()
}

/// Renders the guide. `default_len` is the length of a programme nothing follows (and of
/// filler blocks); `now` places the filler.
pub fn render(channels: &[Arc<StreamConfig>], default_len: Duration, now: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(256 + channels.len() * 512);
    out.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE tv SYSTEM \"xmltv.dtd\">\n",
    );
    let _ = writeln!(
        out,
        "<tv generator-info-name=\"Amps {}\" source-info-name=\"Amps\">",
        env!("CARGO_PKG_VERSION")
    );
    for s in channels {
        let _ = writeln!(out, "  <channel id=\"{}\">", escape(&s.effective_tvg_id()));
        let _ = writeln!(out, "    <display-name>{}</display-name>", escape(&s.name));
        if let Some(t) = s.tvg_name.as_deref().filter(|t| *t != s.name) {
            let _ = writeln!(out, "    <display-name>{}</display-name>", escape(t));
        }
        if let Some(n) = s.channel_number {
            let _ = writeln!(out, "    <display-name>{n}</display-name>");
        }
        if let Some(logo) = &s.logo {
            let _ = writeln!(out, "    <icon src=\"{}\"/>", escape(logo));
        }
        out.push_str("  </channel>\n");
    }
    for s in channels {
        let timed = airings(s, default_len);
        let channel = escape(&s.effective_tvg_id());
        if timed.is_empty() {
            filler(&mut out, s, &channel, default_len, now, None);
            continue;
        }
        let mut last_stop = None;
        for (p, start, stop) in timed {
            programme(
                &mut out,
                &channel,
                &start,
                &stop,
                &p.title,
                p.description.as_deref(),
            );
            last_stop = Some(stop.with_timezone(&Utc));
        }
        // Programs that have all ended: filler from then on, so the channel keeps a guide.
        if let Some(end) = last_stop.filter(|e| *e < now) {
            filler(&mut out, s, &channel, default_len, now, Some(end));
        }
    }
    out.push_str("</tv>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(yaml: &str) -> Arc<StreamConfig> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn channels_then_programmes_with_stops_from_the_next_start() {
        let s = stream(
            "{id: 3, name: 'News & <More>', source: s, ffmpeg_profile: p, tvg_name: NewsHD, channel_number: 7, logo: 'http://l/x.png?a=1&b=2', next_programs: [{title: B, start: '2024-05-04T19:00:00+02:00'}, {title: A, start: '2024-05-04T16:30:00Z', description: \"It's \\\"live\\\"\"}, {title: Untimed}]}",
        );
        let before = DateTime::parse_from_rfc3339("2024-05-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let xml = render(&[s], Duration::minutes(60), before);
        let want = [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<!DOCTYPE tv SYSTEM \"xmltv.dtd\">",
            "<tv generator-info-name=\"Amps VERSION\" source-info-name=\"Amps\">",
            "  <channel id=\"3.amps\">",
            "    <display-name>News &amp; &lt;More&gt;</display-name>",
            "    <display-name>NewsHD</display-name>",
            "    <display-name>7</display-name>",
            "    <icon src=\"http://l/x.png?a=1&amp;b=2\"/>",
            "  </channel>",
            "  <programme start=\"20240504163000 +0000\" stop=\"20240504190000 +0200\" channel=\"3.amps\">",
            "    <title>A</title>",
            "    <desc>It&apos;s &quot;live&quot;</desc>",
            "  </programme>",
            "  <programme start=\"20240504190000 +0200\" stop=\"20240504200000 +0200\" channel=\"3.amps\">",
            "    <title>B</title>",
            "  </programme>",
            "</tv>",
            "",
        ]
        .join("\n")
        .replace("VERSION", env!("CARGO_PKG_VERSION"));
        assert_eq!(xml, want);
    }

    #[test]
    fn channels_without_timed_programs_get_a_day_of_filler() {
        let now = DateTime::parse_from_rfc3339("2024-05-04T16:42:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = stream("{id: 1, name: Bars, source: s, ffmpeg_profile: p, next_programs: [{title: A, description: first}, {title: B}]}");
        let xml = render(&[s], Duration::minutes(60), now);
        assert_eq!(
            xml.matches("<programme ").count(),
            25,
            "16:00 today to 16:42 tomorrow"
        );
        assert!(xml.contains("<programme start=\"20240504160000 +0000\" stop=\"20240504170000 +0000\" channel=\"1.amps\">\n    <title>A</title>\n    <desc>first</desc>"), "{xml}");
        assert!(xml.contains("<programme start=\"20240504170000 +0000\" stop=\"20240504180000 +0000\" channel=\"1.amps\">\n    <title>B</title>"), "{xml}");
        assert!(
            xml.contains("stop=\"20240505164210 +0000\""),
            "the last block ends a day after now: {xml}"
        );
        // No programs at all: the channel's name; a schedule window clips the filler.
        let s = stream("{id: 2, name: Match, source: s, ffmpeg_profile: p, schedule: {start: '2024-05-04T18:30:00Z', end: '2024-05-04T20:00:00Z'}}");
        let xml = render(&[s], Duration::minutes(60), now);
        assert_eq!(xml.matches("<title>Match</title>").count(), 2, "{xml}");
        assert!(
            xml.contains("start=\"20240504183000 +0000\" stop=\"20240504193000 +0000\""),
            "{xml}"
        );
        assert!(
            xml.contains("start=\"20240504193000 +0000\" stop=\"20240504200000 +0000\""),
            "{xml}"
        );
        // Timed programs that have all ended: filler after them.
        let s = stream("{id: 3, name: Old, source: s, ffmpeg_profile: p, next_programs: [{title: Past, start: '2024-05-04T10:00:00Z'}]}");
        let xml = render(&[s], Duration::minutes(60), now);
        assert!(xml.contains("<title>Past</title>"), "{xml}");
        assert!(xml.contains("start=\"20240504160000 +0000\" stop=\"20240504170000 +0000\" channel=\"3.amps\">\n    <title>Old</title>"), "{xml}");
        // An archived channel keeps its past: filler from its archive's oldest hour.
        let s = stream("{id: 4, name: Arch, source: s, ffmpeg_profile: p, catchup_hours: 6}");
        let xml = render(&[s], Duration::minutes(60), now);
        assert_eq!(
            xml.matches("<programme ").count(),
            31,
            "10:00 today to 16:42 tomorrow"
        );
        assert!(xml.contains("<programme start=\"20240504100000 +0000\" stop=\"20240504110000 +0000\" channel=\"4.amps\">"), "{xml}");
    }

    proptest! {
        #[test]
        fn any_text_stays_inside_its_element(title in any::<String>(), name in any::<String>()) {
            let mut s: StreamConfig = serde_yaml::from_str("{id: 1, name: x, source: s, ffmpeg_profile: p}").unwrap();
            s.name = name;
            s.next_programs = vec![Program { title, start: Some(crate::config::Timestamp::parse("2024-05-04T16:30:00Z").unwrap()), stop: None, description: None }];
            let before = DateTime::parse_from_rfc3339("2024-05-04T12:00:00Z").unwrap().with_timezone(&Utc);
            let xml = render(&[Arc::new(s)], Duration::minutes(30), before);
            prop_assert_eq!(xml.matches("<title>").count(), 1);
            prop_assert_eq!(xml.matches("</title>").count(), 1);
            prop_assert_eq!(xml.matches("<display-name>").count(), 1);
            prop_assert_eq!(xml.matches('<').count(), xml.matches('>').count());
            prop_assert!(!xml.chars().any(|c| (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r'));
        }
    }
}
