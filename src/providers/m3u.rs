//! Parsing providers' M3U playlists (`#EXTM3U` / `#EXTINF`, the m3u_plus dialect). Pure:
//! bytes in, entries out.
//!
//! Written for what providers really send: a BOM, CRLF or CR line ends, attributes in any
//! order, quoted or unquoted values, names with commas (the name is everything after the
//! first comma outside quotes, so quoted attribute values and names may both hold commas), `#EXTGRP`, `#EXTVLCOPT` and `#KODIPROP` lines between `#EXTINF`
//! and the URL, blank and junk lines, invalid UTF-8. A malformed entry is skipped and
//! counted, never fatal. Everything is bounded: a line longer than [`MAX_LINE`] is
//! skipped (and counted), and at most `max_entries` entries are read.

/// The longest line read; longer ones (a 100 MB "line") are skipped whole.
pub const MAX_LINE: usize = 64 * 1024;

/// One channel of a provider's playlist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub name: String,
    pub url: String,
    pub tvg_id: Option<String>,
    pub tvg_name: Option<String>,
    pub logo: Option<String>,
    pub group: Option<String>,
    /// `tvg-chno` or `channel-number`.
    pub number: Option<u32>,
    /// `tvg-shift`: hours added to the guide's times for this channel.
    pub tvg_shift: Option<f64>,
    /// The provider's own catch-up days (`catchup-days`, Xtream `tv_archive_duration`).
    pub catchup_days: Option<u32>,
    /// `#EXTVLCOPT:http-user-agent=`.
    pub user_agent: Option<String>,
    /// `#EXTVLCOPT:http-referrer=` (or `http-referer`).
    pub referrer: Option<String>,
    /// Xtream Codes' `stream_id`: the most stable key a provider gives.
    pub stream_id: Option<u64>,
}

/// What a parse found.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The `#EXTM3U` header's `url-tvg` / `x-tvg-url`, if any.
    pub guide_url: Option<String>,
    pub entries: Vec<Entry>,
    /// Entries skipped: no URL, no usable name, a line too long, a URL that is not one.
    pub skipped: usize,
    /// Lines that are neither tags nor URLs (ignored).
    pub junk: usize,
    /// More than `max_entries` entries were offered; the rest were not read.
    pub truncated: bool,
}

/// The value of attribute `key` in `attrs`.
fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Splits `#EXTINF:<duration> <attrs>,<name>` into its attributes and its name. The
/// attributes end at the first comma outside quotes (`tvg-name="a,b"` stays one value);
/// everything after it is the name, commas and all (`BBC One, HD`).
fn split_extinf(rest: &str) -> (Vec<(String, String)>, String) {
    let bytes = rest.as_bytes();
    let mut in_quotes = false;
    let mut first_comma = None;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                first_comma = Some(i);
                break;
            }
            _ => {}
        }
    }
    let (head, name) = match first_comma {
        Some(i) => (&rest[..i], rest[i + 1..].trim()),
        None => (rest, ""),
    };
    (attributes(head), name.to_owned())
}

/// `key="value"` and `key=value` pairs, in any order; the leading duration is skipped.
fn attributes(head: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = head.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b',') {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' && b[i] != b'\t' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            continue; // a bare word such as the duration `-1`
        }
        let key = &head[key_start..i];
        i += 1;
        let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
            let q = b[i];
            i += 1;
            let start = i;
            while i < b.len() && b[i] != q {
                i += 1;
            }
            let v = &head[start..i.min(b.len())];
            i += 1;
            v
        } else {
            let start = i;
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                i += 1;
            }
            &head[start..i]
        };
        if !key.is_empty() {
            out.push((key.to_owned(), value.to_owned()));
        }
    }
    out
}

fn number(v: Option<&str>) -> Option<u32> {
    v.and_then(|v| v.parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n >= 1.0 && *n < 1e9)
        .map(|n| n as u32)
}

/// Whether `url` can be a stream address (a scheme we play, no whitespace).
fn url_ok(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    [
        "http://", "https://", "rtmp://", "rtmps://", "rtsp://", "udp://", "rtp://", "srt://",
    ]
    .iter()
    .any(|s| lower.starts_with(s))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Lines of `data` as text: CRLF, CR and LF ends; lines over [`MAX_LINE`] come back as
/// `None` (skipped without being held in memory twice).
fn lines(data: &[u8]) -> impl Iterator<Item = Option<std::borrow::Cow<'_, str>>> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    data.split(|b| *b == b'\n' || *b == b'\r')
        .filter(|l| !l.is_empty())
        .map(|l| (l.len() <= MAX_LINE).then(|| String::from_utf8_lossy(l)))
}

/// Parses a playlist, keeping at most `max_entries` entries.
pub fn parse(data: &[u8], max_entries: usize) -> Parsed {
    let mut out = Parsed::default();
    let mut pending: Option<Entry> = None;
    for line in lines(data) {
        let Some(line) = line else {
            // A line too long: whatever entry it belonged to is broken.
            if pending.take().is_some() {
                out.skipped += 1;
            } else {
                out.junk += 1;
            }
            continue;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = strip_tag(line, "#EXTM3U") {
            let attrs = attributes(rest);
            out.guide_url = attr(&attrs, "url-tvg")
                .or_else(|| attr(&attrs, "x-tvg-url"))
                .map(|u| u.split(',').next().unwrap_or(u).trim().to_owned());
        } else if let Some(rest) = strip_tag(line, "#EXTINF:") {
            if pending.is_some() {
                out.skipped += 1; // an #EXTINF without a URL
            }
            let (attrs, name) = split_extinf(rest);
            let name = if name.is_empty() {
                attr(&attrs, "tvg-name").unwrap_or_default().to_owned()
            } else {
                name
            };
            pending = Some(Entry {
                name,
                tvg_id: attr(&attrs, "tvg-id").map(str::to_owned),
                tvg_name: attr(&attrs, "tvg-name").map(str::to_owned),
                logo: attr(&attrs, "tvg-logo")
                    .or_else(|| attr(&attrs, "logo"))
                    .map(str::to_owned),
                group: attr(&attrs, "group-title").map(str::to_owned),
                number: number(attr(&attrs, "tvg-chno").or_else(|| attr(&attrs, "channel-number"))),
                tvg_shift: attr(&attrs, "tvg-shift")
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|h| h.is_finite() && h.abs() <= 24.0),
                catchup_days: attr(&attrs, "catchup-days").and_then(|v| v.parse().ok()),
                ..Entry::default()
            });
        } else if let Some(rest) = strip_tag(line, "#EXTGRP:") {
            if let Some(e) = pending.as_mut() {
                if e.group.is_none() && !rest.trim().is_empty() {
                    e.group = Some(rest.trim().to_owned());
                }
            }
        } else if let Some(rest) = strip_tag(line, "#EXTVLCOPT:") {
            if let (Some(e), Some((k, v))) = (pending.as_mut(), rest.split_once('=')) {
                let v = v.trim().to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "http-user-agent" => e.user_agent = Some(v),
                    "http-referrer" | "http-referer" => e.referrer = Some(v),
                    _ => {}
                }
            }
        } else if line.starts_with('#') {
            // #KODIPROP (inputstream settings for Kodi's own player), #EXTREM and other
            // comments: nothing Amps' pipeline needs.
        } else if pending.is_some() && !line.contains("://") {
            // Junk between an #EXTINF and its URL (some panels print notices).
            out.junk += 1;
        } else if let Some(mut e) = pending.take() {
            if e.name.trim().is_empty() || !url_ok(line) {
                out.skipped += 1;
                continue;
            }
            if out.entries.len() >= max_entries {
                out.truncated = true;
                break;
            }
            e.url = line.to_owned();
            out.entries.push(e);
        } else {
            // A URL with no #EXTINF before it (a plain M3U): named after its address.
            if url_ok(line) {
                if out.entries.len() >= max_entries {
                    out.truncated = true;
                    break;
                }
                let name = line.rsplit('/').next().unwrap_or(line);
                let name = name.split('?').next().unwrap_or(name);
                out.entries.push(Entry {
                    name: if name.is_empty() { line } else { name }.to_owned(),
                    url: line.to_owned(),
                    ..Entry::default()
                });
            } else {
                out.junk += 1;
            }
        }
    }
    if pending.is_some() {
        out.skipped += 1;
    }
    out
}

/// `line` without `tag` (matched case-insensitively), if it starts with it.
fn strip_tag<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    let head = line.get(..tag.len())?;
    head.eq_ignore_ascii_case(tag).then(|| &line[tag.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_quirks_providers_send() {
        let text = "\u{FEFF}#EXTM3U url-tvg=\"http://g/epg.xml.gz\" x-tvg-url=\"ignored\"\r\n\
            #EXTINF:-1 group-title=\"UK | News\" tvg-logo=\"http://l/1.png\" tvg-id=\"bbc1.uk\" tvg-name=\"BBC One, HD\",BBC One, HD\r\n\
            #EXTVLCOPT:http-user-agent=Kodi/20\r\n\
            #EXTVLCOPT:http-referrer=http://ref/\r\n\
            #KODIPROP:inputstream=inputstream.adaptive\r\n\
            http://p/u/pw/1.ts\r\n\
            \r\n\
            junk line\n\
            #EXTINF:0 tvg-chno=7 tvg-id=plain tvg-shift=-1.5 catchup-days=3,Unquoted\n\
            #EXTGRP:Sports\n\
            http://p/u/pw/2.ts\n\
            #EXTINF:-1,No URL\n\
            #EXTINF:-1 tvg-id='single',Single quotes\r\
            rtmp://p/live/3\n\
            #EXTINF:-1,Bad URL\n\
            file:///etc/passwd\n\
            http://p/plain/4.ts?x=1\n";
        let p = parse(text.as_bytes(), 100);
        assert_eq!(p.guide_url.as_deref(), Some("http://g/epg.xml.gz"));
        assert_eq!(p.entries.len(), 4, "{:?}", p.entries);
        assert_eq!(p.skipped, 2, "no URL, bad URL");
        assert_eq!(p.junk, 1);
        let a = &p.entries[0];
        assert_eq!(a.name, "BBC One, HD");
        assert_eq!(a.tvg_name.as_deref(), Some("BBC One, HD"));
        assert_eq!(a.tvg_id.as_deref(), Some("bbc1.uk"));
        assert_eq!(a.group.as_deref(), Some("UK | News"));
        assert_eq!(a.logo.as_deref(), Some("http://l/1.png"));
        assert_eq!(a.user_agent.as_deref(), Some("Kodi/20"));
        assert_eq!(a.referrer.as_deref(), Some("http://ref/"));
        assert_eq!(a.url, "http://p/u/pw/1.ts");
        let b = &p.entries[1];
        assert_eq!(
            (b.name.as_str(), b.number, b.tvg_shift, b.catchup_days),
            ("Unquoted", Some(7), Some(-1.5), Some(3))
        );
        assert_eq!(b.group.as_deref(), Some("Sports"), "#EXTGRP");
        assert_eq!(p.entries[2].tvg_id.as_deref(), Some("single"));
        assert_eq!(p.entries[2].url, "rtmp://p/live/3");
        assert_eq!(
            p.entries[3].name, "4.ts",
            "a bare URL is named after its file"
        );
    }

    #[test]
    fn long_lines_and_too_many_entries_are_bounded() {
        let mut text = String::from("#EXTM3U\n#EXTINF:-1,Long\n");
        text.push_str(&"x".repeat(MAX_LINE + 1));
        text.push('\n');
        for i in 0..10 {
            text.push_str(&format!("#EXTINF:-1,C{i}\nhttp://h/{i}\n"));
        }
        let p = parse(text.as_bytes(), 4);
        assert_eq!(p.entries.len(), 4);
        assert!(p.truncated);
        assert_eq!(p.skipped, 1);
        assert_eq!(p.entries[0].name, "C0");
    }

    #[test]
    fn invalid_utf8_and_attribute_junk_never_panic() {
        let data = b"#EXTM3U\n#EXTINF:-1 tvg-id=\"a\xff\" =x \"\"=y tvg-name=\"open,Name\xfe\nhttp://h/1\n";
        let p = parse(data, 10);
        assert_eq!(p.entries.len(), 1);
        assert!(p.entries[0].tvg_id.as_deref().unwrap().starts_with('a'));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_within_bounds(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let p = parse(&data, 5);
            proptest::prop_assert!(p.entries.len() <= 5);
            for e in &p.entries {
                proptest::prop_assert!(url_ok(&e.url));
                proptest::prop_assert!(!e.name.trim().is_empty());
            }
        }
    }
}
