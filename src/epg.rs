//! The TV guide as XMLTV (what Kodi IPTV Simple, Jellyfin and Plex read). Pure.
//!
//! One `<channel>` per channel (id = `tvg_id`, display names, icon) and one `<programme>`
//! per program with a start time; a programme ends where the next one starts, or after a
//! default duration. Text is escaped, and characters XML 1.0 cannot carry are dropped.

use crate::config::{Program, StreamConfig};
use chrono::Duration;
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

/// Renders the guide. `default_len` is the length of a programme nothing follows.
pub fn render(channels: &[Arc<StreamConfig>], default_len: Duration) -> String {
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
        let mut timed: Vec<&Program> = s
            .next_programs
            .iter()
            .filter(|p| p.start.is_some())
            .collect();
        timed.sort_by_key(|p| p.start);
        let channel = escape(&s.effective_tvg_id());
        for (i, p) in timed.iter().enumerate() {
            let start = p.start.expect("filtered").0;
            let stop = timed
                .get(i + 1)
                .and_then(|n| n.start)
                .map(|n| n.0)
                .filter(|n| *n > start)
                .unwrap_or(start + default_len);
            let _ = writeln!(
                out,
                "  <programme start=\"{}\" stop=\"{}\" channel=\"{channel}\">",
                xmltv_time(&start),
                xmltv_time(&stop)
            );
            let _ = writeln!(out, "    <title>{}</title>", escape(&p.title));
            if let Some(d) = &p.description {
                let _ = writeln!(out, "    <desc>{}</desc>", escape(d));
            }
            out.push_str("  </programme>\n");
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
        let xml = render(&[s], Duration::minutes(60));
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

    proptest! {
        #[test]
        fn any_text_stays_inside_its_element(title in any::<String>(), name in any::<String>()) {
            let mut s: StreamConfig = serde_yaml::from_str("{id: 1, name: x, source: s, ffmpeg_profile: p}").unwrap();
            s.name = name;
            s.next_programs = vec![Program { title, start: Some(crate::config::Timestamp::parse("2024-05-04T16:30:00Z").unwrap()), description: None }];
            let xml = render(&[Arc::new(s)], Duration::minutes(30));
            prop_assert_eq!(xml.matches("<title>").count(), 1);
            prop_assert_eq!(xml.matches("</title>").count(), 1);
            prop_assert_eq!(xml.matches("<display-name>").count(), 1);
            prop_assert_eq!(xml.matches('<').count(), xml.matches('>').count());
            prop_assert!(!xml.chars().any(|c| (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r'));
        }
    }
}
