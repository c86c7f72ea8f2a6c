//! M3U playlist rendering. Pure: channels and options in, text out.
//!
//! Channel metadata comes from config and API users and is untrusted here: names,
//! descriptions and titles are sanitised so that no newline, quote or comma can add an
//! entry, an attribute or change the display name players read after the last comma.

use crate::config::{Program, StreamConfig};
use chrono::{DateTime, Utc};
use std::fmt::Write;
use std::sync::Arc;

/// What the playlist needs beyond the channels.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    /// Absolute base URL players use, without a trailing slash (`http://nas:5000`).
    pub base_url: &'a str,
    /// Token to append to stream URLs (`?token=`), if the server requires one.
    pub token: Option<&'a str>,
    /// Guide URL for the `x-tvg-url` header attribute, once a guide exists.
    pub epg_url: Option<&'a str>,
    /// Now, for choosing the next program.
    pub now: DateTime<Utc>,
    /// An output profile (`/playlist.m3u?profile=<name>`): the stream URLs of channels
    /// that offer it (`streams[].profiles`) ask for it; the others stay as they are.
    pub profile: Option<&'a str>,
}

/// The program shown as "next": the earliest one that has not started yet, or else the
/// first one without a start time.
pub fn next_program(programs: &[Program], now: DateTime<Utc>) -> Option<&Program> {
    programs
        .iter()
        .filter(|p| p.start.is_some_and(|s| s.utc() > now))
        .min_by_key(|p| p.start)
        .or_else(|| programs.iter().find(|p| p.start.is_none()))
}

/// How a value is cleaned before it goes into the playlist.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clean {
    /// Single-line text with no quote or comma: safe inside `"..."` and before the name
    /// comma.
    Text,
    /// Single-line text with no quote, for `#EXTREM` lines (commas are harmless there).
    Remark,
    /// A URL: characters that could break out of an attribute are escaped.
    Url,
}

/// Appends a number in decimal (`write!` costs several times more, per channel).
fn push_u32(out: &mut String, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// Whether cleaning leaves anything of `s` (cleaning drops controls and folds whitespace).
fn visible(s: &str) -> bool {
    match s.bytes().position(|x| x > b' ' && x != 0x7f) {
        // A printable ASCII byte, or the first non-ASCII one: decide by char from there.
        Some(i) if s.as_bytes()[i] < 0x80 => true,
        Some(i) => s[i..]
            .chars()
            .any(|c| !(c.is_control() || c.is_whitespace())),
        None => false,
    }
}

/// Whether cleaning `s` as `how` would change it (most names, logos and URLs: no).
/// ASCII is checked byte by byte; from the first non-ASCII character on, by `char`.
fn needs_cleaning(s: &str, how: Clean) -> bool {
    let b = s.as_bytes();
    if b.first() == Some(&b' ') || b.last() == Some(&b' ') {
        return true;
    }
    let mut prev_space = false;
    for (i, &x) in b.iter().enumerate() {
        if x >= 0x80 {
            // `i` is a char boundary: everything before it is ASCII.
            for c in s[i..].chars() {
                let bad = match c {
                    '"' => true,
                    ',' => how != Clean::Remark,
                    ' ' => prev_space || how == Clean::Url,
                    c => c.is_control() || c.is_whitespace(),
                };
                if bad {
                    return true;
                }
                prev_space = c == ' ';
            }
            return false;
        }
        let bad = match x {
            b'"' => true,
            b',' => how != Clean::Remark,
            b' ' => prev_space || how == Clean::Url,
            x => x < 0x20 || x == 0x7f,
        };
        if bad {
            return true;
        }
        prev_space = x == b' ';
    }
    false
}

/// Appends `s` cleaned as `how` to `out`, without allocating.
fn push_clean(out: &mut String, s: &str, how: Clean) {
    if needs_cleaning(s, how) {
        push_cleaned_slowly(out, s, how);
    } else {
        out.push_str(s);
    }
}

fn push_cleaned_slowly(out: &mut String, s: &str, how: Clean) {
    if how == Clean::Url {
        for c in s.trim().chars() {
            match c {
                '"' => out.push_str("%22"),
                ',' => out.push_str("%2C"),
                ' ' => out.push_str("%20"),
                c if c.is_control() || c.is_whitespace() => {}
                c => out.push(c),
            }
        }
        return;
    }
    let start = out.len();
    let mut space = false;
    for c in s.chars() {
        let c = match c {
            '"' => '\'',
            // SINGLE LOW-9 QUOTATION MARK: looks like a comma, is not one.
            ',' if how == Clean::Text => '\u{201A}',
            c if c.is_control() || c.is_whitespace() => ' ',
            c => c,
        };
        if c == ' ' {
            if !space && out.len() > start {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    let keep = start + out[start..].trim_end().len();
    out.truncate(keep);
}

/// ` key="value"`, with the value cleaned; nothing when the cleaned value would be empty.
fn attr(out: &mut String, key: &str, value: &str, how: Clean) {
    if visible(value) {
        out.push(' ');
        out.push_str(key);
        out.push_str("=\"");
        push_clean(out, value, how);
        out.push('"');
    }
}

/// The absolute URL of a channel's stream.
pub fn stream_url(base_url: &str, id: u32, token: Option<&str>) -> String {
    format!("{base_url}/stream/{id}{}", crate::auth::token_query(token))
}

/// Renders the playlist.
pub fn render(channels: &[Arc<StreamConfig>], opts: &Options) -> String {
    // About what a channel with a logo, a group and a next program takes.
    let mut out = String::with_capacity(128 + channels.len() * 512);
    out.push_str("#EXTM3U");
    if let Some(epg) = opts.epg_url {
        attr(&mut out, "x-tvg-url", epg, Clean::Url);
        attr(&mut out, "url-tvg", epg, Clean::Url);
    }
    out.push('\n');
    // The token is the same on every line: encode it once.
    let query = crate::auth::token_query(opts.token);
    for s in channels {
        render_channel(&mut out, s, opts, &query);
    }
    out
}

fn render_channel(out: &mut String, s: &StreamConfig, opts: &Options, query: &str) {
    let named = visible(&s.name);
    let push_name = |out: &mut String| {
        if named {
            push_clean(out, &s.name, Clean::Text);
        } else {
            out.push_str("Channel ");
            push_u32(out, s.id);
        }
    };
    out.push_str("#EXTINF:-1");
    match &s.tvg_id {
        Some(t) => attr(out, "tvg-id", t, Clean::Text),
        None => {
            out.push_str(" tvg-id=\"");
            push_u32(out, s.id);
            out.push_str(".amps\"");
        }
    }
    match s.tvg_name.as_deref() {
        Some(t) => attr(out, "tvg-name", t, Clean::Text),
        None => {
            out.push_str(" tvg-name=\"");
            push_name(out);
            out.push('"');
        }
    }
    if let Some(logo) = &s.logo {
        attr(out, "tvg-logo", logo, Clean::Url);
    }
    if let Some(g) = &s.group {
        attr(out, "group-title", g, Clean::Text);
    }
    if let Some(n) = s.channel_number {
        out.push_str(" channel-number=\"");
        push_u32(out, n);
        out.push_str("\" tvg-chno=\"");
        push_u32(out, n);
        out.push('"');
    }
    if s.catchup_hours > 0 {
        // Kodi IPTV Simple's catch-up: it fills {utc} and {utcend} with a programme's
        // start and end in Unix seconds.
        out.push_str(" catchup=\"default\" catchup-days=\"");
        push_u32(out, s.catchup_hours.div_ceil(24));
        out.push_str("\" catchup-source=\"");
        out.push_str(opts.base_url);
        out.push_str("/catchup/");
        push_u32(out, s.id);
        out.push_str(".ts?start={utc}&end={utcend}");
        if let Some(rest) = query.strip_prefix('?') {
            out.push('&');
            out.push_str(rest);
        }
        out.push('"');
    }
    out.push(',');
    push_name(out);
    out.push('\n');
    if let Some(p) = next_program(&s.next_programs, opts.now) {
        out.push_str("#EXTREM:AMP-NEXT");
        attr(out, "title", &p.title, Clean::Remark);
        if let Some(t) = p.start {
            let _ = write!(out, " start=\"{t}\"");
        }
        if let Some(d) = &p.description {
            attr(out, "description", d, Clean::Remark);
        }
        out.push('\n');
    }
    if let Some(feed) = s.program_feed.as_deref().filter(|f| visible(f)) {
        out.push_str("#EXTREM:AMP-PROGRAM-FEED:");
        push_clean(out, feed, Clean::Url);
        out.push('\n');
    }
    if let Some(d) = s.description.as_deref().filter(|d| visible(d)) {
        out.push_str("#EXTREM:AMP-DESCRIPTION:");
        push_clean(out, d, Clean::Remark);
        out.push('\n');
    }
    out.push_str(opts.base_url);
    out.push_str("/stream/");
    push_u32(out, s.id);
    out.push_str(query);
    if let Some(p) = opts.profile.filter(|p| s.profiles.iter().any(|o| o == p)) {
        out.push(if query.is_empty() { '?' } else { '&' });
        out.push_str("profile=");
        out.push_str(&crate::auth::encode_for_query(p));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timestamp;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Timestamp::parse("2024-05-04T12:00:00Z").unwrap().utc()
    }

    fn opts() -> Options<'static> {
        Options {
            base_url: "http://nas:5000",
            token: Some("t&k"),
            epg_url: None,
            now: now(),
            profile: None,
        }
    }

    fn stream(yaml: &str) -> Arc<StreamConfig> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn renders_every_field_in_the_expected_lines() {
        let s = stream(
            "{id: 1, name: News, source: s, ffmpeg_profile: p, tvg_name: News HD, logo: 'http://l/1.png', group: Info, channel_number: 3, description: Daily news, program_feed: 'http://f/1.json', next_programs: [{title: Old, start: '2024-05-04T11:00:00Z'}, {title: Late, start: '2024-05-04T20:00:00Z'}, {title: Soon, start: '2024-05-04T13:00:00Z', description: Next up}]}",
        );
        let text = render(&[s], &opts());
        assert_eq!(
            text,
            "#EXTM3U\n\
             #EXTINF:-1 tvg-id=\"1.amps\" tvg-name=\"News HD\" tvg-logo=\"http://l/1.png\" group-title=\"Info\" channel-number=\"3\" tvg-chno=\"3\",News\n\
             #EXTREM:AMP-NEXT title=\"Soon\" start=\"2024-05-04T13:00:00Z\" description=\"Next up\"\n\
             #EXTREM:AMP-PROGRAM-FEED:http://f/1.json\n\
             #EXTREM:AMP-DESCRIPTION:Daily news\n\
             http://nas:5000/stream/1?token=t%26k\n"
        );
    }

    #[test]
    fn archived_channels_offer_catch_up_the_way_kodi_reads_it() {
        let s = stream("{id: 4, name: Arch, source: s, ffmpeg_profile: p, catchup_hours: 30}");
        let text = render(&[s], &opts());
        assert_eq!(
            text,
            "#EXTM3U\n\
             #EXTINF:-1 tvg-id=\"4.amps\" tvg-name=\"Arch\" catchup=\"default\" catchup-days=\"2\" catchup-source=\"http://nas:5000/catchup/4.ts?start={utc}&end={utcend}&token=t%26k\",Arch\n\
             http://nas:5000/stream/4?token=t%26k\n"
        );
        let s = stream("{id: 4, name: Arch, source: s, ffmpeg_profile: p, catchup_hours: 24}");
        let o = Options {
            token: None,
            ..opts()
        };
        assert!(render(&[s], &o).contains(
            " catchup-days=\"1\" catchup-source=\"http://nas:5000/catchup/4.ts?start={utc}&end={utcend}\","
        ));
    }

    #[test]
    fn a_profile_variant_asks_for_the_profile_where_a_channel_offers_it() {
        let a = stream("{id: 1, name: A, source: s, ffmpeg_profile: p, profiles: [mobile, hd]}");
        let b = stream("{id: 2, name: B, source: s, ffmpeg_profile: p}");
        let o = Options {
            profile: Some("mobile"),
            ..opts()
        };
        let text = render(&[a.clone(), b.clone()], &o);
        assert!(text.contains("\nhttp://nas:5000/stream/1?token=t%26k&profile=mobile\n"));
        assert!(text.contains("\nhttp://nas:5000/stream/2?token=t%26k\n"));
        let o = Options {
            token: None,
            profile: Some("a b&c"),
            ..opts()
        };
        let c = stream("{id: 3, name: C, source: s, ffmpeg_profile: p, profiles: ['a b&c']}");
        assert!(render(&[c], &o).ends_with("/stream/3?profile=a%20b%26c\n"));
        assert_eq!(
            render(&[a], &opts()),
            render(
                &[stream("{id: 1, name: A, source: s, ffmpeg_profile: p}")],
                &opts()
            )
        );
    }

    #[test]
    fn empty_values_are_omitted_and_guide_goes_in_the_header() {
        let s = stream("{id: 2, name: Bare, source: s, ffmpeg_profile: p}");
        let o = Options {
            token: None,
            epg_url: Some("http://nas:5000/epg.xml?token=x"),
            ..opts()
        };
        assert_eq!(
            render(&[s], &o),
            "#EXTM3U x-tvg-url=\"http://nas:5000/epg.xml?token=x\" url-tvg=\"http://nas:5000/epg.xml?token=x\"\n\
             #EXTINF:-1 tvg-id=\"2.amps\" tvg-name=\"Bare\",Bare\n\
             http://nas:5000/stream/2\n"
        );
    }

    #[test]
    fn next_program_skips_started_ones_and_falls_back_to_untimed() {
        let p: Vec<Program> = serde_json::from_str(
            r#"[{"title":"Past","start":"2024-05-04T11:00:00Z"},{"title":"Untimed"}]"#,
        )
        .unwrap();
        assert_eq!(next_program(&p, now()).unwrap().title, "Untimed");
        assert!(next_program(&p[..1], now()).is_none());
    }

    #[test]
    fn hostile_text_cannot_add_entries_or_attributes() {
        let s = stream(
            "{id: 3, name: \"Evil\\\",\\n#EXTINF:-1,Fake\\nhttp://evil/\", source: s, ffmpeg_profile: p, group: 'a\" tvg-logo=\"x', description: \"line\\r\\nhttp://evil\"}",
        );
        let text = render(&[s], &opts());
        assert_eq!(
            text,
            "#EXTM3U\n\
             #EXTINF:-1 tvg-id=\"3.amps\" tvg-name=\"Evil'\u{201A} #EXTINF:-1\u{201A}Fake http://evil/\" group-title=\"a' tvg-logo='x\",Evil'\u{201A} #EXTINF:-1\u{201A}Fake http://evil/\n\
             #EXTREM:AMP-DESCRIPTION:line http://evil\n\
             http://nas:5000/stream/3?token=t%26k\n"
        );
    }

    /// Parses one `#EXTINF` line into (attributes, name); None if it is not well formed.
    fn parse_extinf(line: &str) -> Option<(Vec<(String, String)>, String)> {
        let rest = line.strip_prefix("#EXTINF:-1")?;
        let comma = rest.rfind(',')?;
        let (mut attrs_text, name) = (&rest[..comma], &rest[comma + 1..]);
        let mut attrs = Vec::new();
        while !attrs_text.is_empty() {
            attrs_text = attrs_text.strip_prefix(' ')?;
            let eq = attrs_text.find("=\"")?;
            let key = &attrs_text[..eq];
            let after = &attrs_text[eq + 2..];
            let close = after.find('"')?;
            attrs.push((key.to_owned(), after[..close].to_owned()));
            attrs_text = &after[close + 1..];
        }
        Some((attrs, name.to_owned()))
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 12345, u32::MAX] {
            let mut s = String::new();
            push_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    proptest! {
        #[test]
        fn the_fast_paths_agree_with_cleaning(s in "[ -~\\t\\n\\u{a0}\\u{2028}é,\"]{0,12}") {
            for how in [Clean::Text, Clean::Remark, Clean::Url] {
                let mut slow = String::new();
                push_cleaned_slowly(&mut slow, &s, how);
                if !needs_cleaning(&s, how) {
                    prop_assert_eq!(&slow, &s);
                }
                prop_assert_eq!(visible(&s), !slow.is_empty());
            }
        }

        #[test]
        fn any_text_keeps_one_entry_per_channel_with_the_same_attributes(
            names in proptest::collection::vec(any::<String>(), 1..6),
            desc in any::<String>(),
            group in any::<String>(),
            logo in any::<String>(),
            title in any::<String>(),
        ) {
            let channels: Vec<Arc<StreamConfig>> = names.iter().enumerate().map(|(i, n)| {
                let mut s: StreamConfig = serde_yaml::from_str("{id: 1, name: x, source: s, ffmpeg_profile: p}").unwrap();
                s.id = i as u32 + 1;
                s.name = n.clone();
                s.tvg_name = Some(n.clone());
                s.description = Some(desc.clone());
                s.group = Some(group.clone());
                s.logo = Some(logo.clone());
                s.channel_number = Some(i as u32 + 1);
                s.next_programs = vec![Program { title: title.clone(), start: None, stop: None, description: Some(desc.clone()) }];
                Arc::new(s)
            }).collect();
            let text = render(&channels, &opts());
            let lines: Vec<&str> = text.lines().collect();
            prop_assert_eq!(lines[0], "#EXTM3U");
            let urls: Vec<&str> = lines.iter().copied().filter(|l| !l.starts_with('#')).collect();
            let want: Vec<String> = (1..=channels.len()).map(|i| format!("http://nas:5000/stream/{i}?token=t%26k")).collect();
            prop_assert_eq!(urls, want);
            let extinf: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("#EXTINF")).collect();
            prop_assert_eq!(extinf.len(), channels.len());
            for (i, l) in extinf.iter().enumerate() {
                let (attrs, name) = parse_extinf(l).expect("well-formed EXTINF");
                let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
                let allowed = ["tvg-id", "tvg-name", "tvg-logo", "group-title", "channel-number", "tvg-chno"];
                prop_assert!(keys.iter().all(|k| allowed.contains(k)), "{:?}", keys);
                prop_assert!(keys.windows(2).all(|w| w[0] != w[1]));
                prop_assert!(attrs.iter().all(|(_, v)| !v.is_empty()));
                prop_assert!(!name.is_empty());
                prop_assert_eq!(attrs[0].1.as_str(), format!("{}.amps", i + 1));
            }
            for l in &lines {
                prop_assert!(
                    l.starts_with("#EXTINF:-1 ") || l.starts_with("#EXTREM:AMP-") || l.starts_with("http://nas:5000/stream/") || *l == "#EXTM3U",
                    "unexpected line {:?}", l
                );
            }
        }
    }
}
