//! Reading XMLTV guides as a stream: one event at a time from any reader, keeping only
//! the programmes of channels Amps serves, inside a time window, with bounded text. Memory
//! does not grow with the file's size. Pure: the caller opens the reader.
//!
//! Safety: no DTD is processed and no entity but XML's five and character references is
//! expanded (quick-xml does neither), so neither external entities (XXE) nor entity
//! bombs ("billion laughs") can do anything; an unknown entity leaves the text as it is.
//!
//! Matching: a guide channel belongs to the served channels whose tvg-id is its `id`;
//! a served channel that no guide channel id matches is found by name instead: a guide
//! channel whose `display-name` equals the channel's name or tvg-name, ignoring case,
//! spaces and punctuation. Times without an offset are UTC; `tvg-shift` moves a channel's
//! programmes by whole or fractional hours.

use crate::config::{Program, Timestamp};
use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use quick_xml::events::{BytesStart, Event};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;

/// Longest title / description kept, in characters.
const MAX_TITLE: usize = 300;
const MAX_DESC: usize = 4000;

/// A name as matched: lowercase letters and digits only.
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A served channel the guide may fill.
#[derive(Clone, Debug)]
pub struct Want {
    pub id: u32,
    pub tvg_id: String,
    pub names: Vec<String>,
    /// `tvg-shift` in seconds.
    pub shift_secs: i64,
}

/// The programmes found, by served channel id, each list in start order.
#[derive(Debug, Default)]
pub struct Found {
    pub programmes: HashMap<u32, Vec<Program>>,
    /// `<channel>` elements read.
    pub channels: usize,
    /// `<programme>` elements read.
    pub seen: usize,
    /// Programmes kept.
    pub kept: usize,
    /// Served channels matched by name (no guide id matched their tvg-id).
    pub by_name: usize,
}

/// Parses XMLTV time `20240504120000 +0100` (seconds and offset optional).
pub fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    let (digits, zone) = match s.find([' ', '+', '-']) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let digits: String = digits.chars().take(14).collect();
    let naive = match digits.len() {
        14 => NaiveDateTime::parse_from_str(&digits, "%Y%m%d%H%M%S").ok()?,
        12 => NaiveDateTime::parse_from_str(&format!("{digits}00"), "%Y%m%d%H%M%S").ok()?,
        _ => return None,
    };
    let offset = if zone.is_empty() {
        FixedOffset::east_opt(0)?
    } else {
        let (sign, rest) = match zone.as_bytes()[0] {
            b'+' => (1, &zone[1..]),
            b'-' => (-1, &zone[1..]),
            _ => return None,
        };
        let rest = rest.replace(':', "");
        if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i32 = rest[..2].parse().ok()?;
        let m: i32 = rest[2..].parse().ok()?;
        FixedOffset::east_opt(sign * (h * 3600 + m * 60))?
    };
    naive.and_local_timezone(offset).single()
}

fn attr(e: &BytesStart, key: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .map(|a| match a.unescape_value() {
            Ok(v) => v.into_owned(),
            Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
        })
}

fn clip(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(max)
        .collect();
    s.trim().to_owned()
}

/// Where we are in the document.
enum In {
    Nothing,
    /// A `<channel>`: its id and display names so far.
    Channel(String, Vec<String>),
    /// A `<programme>` we keep: channel ids, start, stop, title, desc.
    Programme {
        ids: Vec<(u32, i64)>,
        start: DateTime<FixedOffset>,
        stop: Option<DateTime<FixedOffset>>,
        title: Option<String>,
        desc: Option<String>,
    },
    /// A programme we do not keep: skipped to its end.
    Skip,
}

/// Reads a guide. `window`: programmes that end before its start or begin after its end
/// are dropped; at most `per_channel` are kept per channel (the earliest).
pub fn read<R: BufRead>(
    r: R,
    wants: &[Want],
    window: (DateTime<Utc>, DateTime<Utc>),
    per_channel: usize,
) -> Result<Found, String> {
    let mut by_tvg: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, w) in wants.iter().enumerate() {
        by_tvg.entry(w.tvg_id.as_str()).or_default().push(i);
        for n in &w.names {
            by_name.entry(normalize(n)).or_default().push(i);
        }
    }
    // Guide channel id -> served channels (indexes into `wants`).
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    let mut name_candidates: Vec<(String, usize)> = Vec::new();
    let mut tvg_matched: HashSet<usize> = HashSet::new();
    let mut finalized = false;
    let mut found = Found::default();
    let mut reader = quick_xml::Reader::from_reader(r);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut state = In::Nothing;
    // Which text element of a programme we are in: 1 title, 2 desc.
    let mut text_of = 0u8;
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not valid XMLTV near byte {}: {e}", reader.error_position()))?;
        let empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if matches!(state, In::Nothing) => {
                match e.name().as_ref() {
                    b"channel" => {
                        found.channels += 1;
                        let id = attr(&e, b"id").unwrap_or_default();
                        if empty {
                            if let Some(t) = by_tvg.get(id.as_str()) {
                                tvg_matched.extend(t.iter().copied());
                                map.insert(id, t.clone());
                            }
                        } else {
                            state = In::Channel(id, Vec::new());
                        }
                    }
                    b"programme" => {
                        found.seen += 1;
                        if !finalized {
                            finalized = true;
                            for (gid, i) in name_candidates.drain(..) {
                                if !tvg_matched.contains(&i) {
                                    found.by_name += 1;
                                    map.entry(gid).or_default().push(i);
                                }
                            }
                        }
                        let ch = attr(&e, b"channel").unwrap_or_default();
                        let targets: Vec<usize> = match map.get(&ch) {
                            Some(t) => t.clone(),
                            None => by_tvg.get(ch.as_str()).cloned().unwrap_or_default(),
                        };
                        let start = attr(&e, b"start").as_deref().and_then(parse_time);
                        let stop = attr(&e, b"stop").as_deref().and_then(parse_time);
                        state = match start {
                            Some(start) if !targets.is_empty() => In::Programme {
                                ids: targets
                                    .iter()
                                    .map(|i| (wants[*i].id, wants[*i].shift_secs))
                                    .collect(),
                                start,
                                stop,
                                title: None,
                                desc: None,
                            },
                            _ => In::Skip,
                        };
                        if empty {
                            state = In::Nothing; // no title: nothing to keep
                        }
                    }
                    _ => {}
                }
            }
            Event::Start(e) => {
                text_of = match (&state, e.name().as_ref()) {
                    (In::Channel(..), b"display-name") => 3,
                    (In::Programme { .. }, b"title") => 1,
                    (In::Programme { .. }, b"desc") => 2,
                    _ => 0,
                };
            }
            Event::Text(t) => {
                let text = match t.unescape() {
                    Ok(s) => s.into_owned(),
                    Err(_) => String::from_utf8_lossy(&t).into_owned(),
                };
                match (&mut state, text_of) {
                    (In::Channel(_, names), 3) if names.len() < 16 => {
                        names.push(clip(&text, MAX_TITLE))
                    }
                    (In::Programme { title, .. }, 1) if title.is_none() => {
                        *title = Some(clip(&text, MAX_TITLE))
                    }
                    (In::Programme { desc, .. }, 2) if desc.is_none() => {
                        *desc = Some(clip(&text, MAX_DESC))
                    }
                    _ => {}
                }
            }
            Event::End(e) => {
                text_of = 0;
                match (e.name().as_ref(), &mut state) {
                    (b"channel", In::Channel(id, names)) => {
                        if let Some(t) = by_tvg.get(id.as_str()) {
                            tvg_matched.extend(t.iter().copied());
                            map.insert(id.clone(), t.clone());
                        } else {
                            let mut hits: Vec<usize> = names
                                .iter()
                                .filter_map(|n| by_name.get(&normalize(n)))
                                .flatten()
                                .copied()
                                .collect();
                            hits.sort_unstable();
                            hits.dedup();
                            name_candidates.extend(hits.into_iter().map(|i| (id.clone(), i)));
                        }
                        state = In::Nothing;
                    }
                    (b"programme", In::Programme { .. }) => {
                        if let In::Programme {
                            ids,
                            start,
                            stop,
                            title,
                            desc,
                        } = std::mem::replace(&mut state, In::Nothing)
                        {
                            keep(
                                &mut found,
                                ids,
                                start,
                                stop,
                                title,
                                desc,
                                window,
                                per_channel,
                            );
                        }
                    }
                    (b"programme", In::Skip) => state = In::Nothing,
                    _ => {}
                }
            }
            _ => {}
        }
        buf.clear();
    }
    for list in found.programmes.values_mut() {
        list.sort_by_key(|p| p.start);
    }
    Ok(found)
}

#[allow(clippy::too_many_arguments)]
fn keep(
    found: &mut Found,
    ids: Vec<(u32, i64)>,
    start: DateTime<FixedOffset>,
    stop: Option<DateTime<FixedOffset>>,
    title: Option<String>,
    desc: Option<String>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    per_channel: usize,
) {
    let Some(title) = title.filter(|t| !t.is_empty()) else {
        return;
    };
    for (id, shift) in ids {
        let d = chrono::Duration::seconds(shift);
        let (s, e) = (start + d, stop.map(|t| t + d));
        let ends = e.unwrap_or(s + chrono::Duration::hours(1));
        if ends.with_timezone(&Utc) < from || s.with_timezone(&Utc) > to {
            continue;
        }
        let list = found.programmes.entry(id).or_default();
        if list.len() >= per_channel {
            continue;
        }
        list.push(Program {
            title: title.clone(),
            start: Some(Timestamp(s)),
            stop: e.map(Timestamp),
            description: desc.clone().filter(|d| !d.is_empty()),
        });
        found.kept += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(id: u32, tvg: &str, name: &str, shift_h: i64) -> Want {
        Want {
            id,
            tvg_id: tvg.into(),
            names: vec![name.into()],
            shift_secs: shift_h * 3600,
        }
    }

    fn window() -> (DateTime<Utc>, DateTime<Utc>) {
        let t = |s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        (t("2024-05-04T00:00:00Z"), t("2024-05-06T00:00:00Z"))
    }

    const GUIDE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE tv SYSTEM "xmltv.dtd">
<tv>
  <channel id="bbc1.uk"><display-name>BBC One</display-name></channel>
  <channel id="other"><display-name lang="en">Sky  News!</display-name></channel>
  <channel id="unserved"><display-name>Nobody</display-name></channel>
  <programme start="20240504120000 +0100" stop="20240504130000 +0100" channel="bbc1.uk">
    <title lang="en">News &amp; Weather</title><desc>Headlines &#233;</desc><category>News</category>
  </programme>
  <programme start="20240504130000 +0100" channel="bbc1.uk"><title>Film</title></programme>
  <programme start="20240504120000" stop="20240504123000" channel="other"><title>Sky at noon</title></programme>
  <programme start="20240504120000" stop="20240504123000" channel="unserved"><title>X</title></programme>
  <programme start="20200101000000 +0000" stop="20200101010000 +0000" channel="bbc1.uk"><title>Old</title></programme>
  <programme start="garbage" channel="bbc1.uk"><title>No time</title></programme>
</tv>"#;

    #[test]
    fn keeps_served_channels_in_the_window_by_id_then_by_name() {
        let wants = [
            want(1, "bbc1.uk", "BBC 1", 0),
            want(2, "sky.news", "Sky News", -1),
        ];
        let f = read(GUIDE.as_bytes(), &wants, window(), 100).unwrap();
        assert_eq!((f.channels, f.seen, f.kept, f.by_name), (3, 6, 3, 1));
        let bbc = &f.programmes[&1];
        assert_eq!(bbc[0].title, "News & Weather");
        assert_eq!(bbc[0].description.as_deref(), Some("Headlines é"));
        assert_eq!(
            bbc[0].start.unwrap().to_string(),
            "2024-05-04T12:00:00+01:00"
        );
        assert_eq!(
            bbc[0].stop.unwrap().to_string(),
            "2024-05-04T13:00:00+01:00"
        );
        assert_eq!(bbc[1].stop, None);
        let sky = &f.programmes[&2];
        assert_eq!(
            sky[0].start.unwrap().utc().to_rfc3339(),
            "2024-05-04T11:00:00+00:00",
            "tvg-shift -1 h"
        );
    }

    #[test]
    fn entity_bombs_and_external_entities_expand_to_nothing() {
        let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE tv [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY xxe SYSTEM "file:///etc/passwd">
]>
<tv><programme start="20240504120000" channel="x"><title>&c;&xxe;</title></programme></tv>"#;
        let f = read(bomb.as_bytes(), &[want(1, "x", "X", 0)], window(), 10).unwrap();
        let t = &f.programmes[&1][0].title;
        assert!(t.len() < 100 && !t.contains("root:"), "{t}");
    }

    #[test]
    fn per_channel_cap_and_bad_xml() {
        let mut x = String::from("<tv>");
        for h in 0..30 {
            x.push_str(&format!("<programme start=\"202405041{h:02}000\" channel=\"x\"><title>P{h}</title></programme>", h = h % 10));
        }
        x.push_str("</tv>");
        let f = read(x.as_bytes(), &[want(1, "x", "X", 0)], window(), 5).unwrap();
        assert_eq!(f.programmes[&1].len(), 5);
        assert!(read("<tv><programme></tv>".as_bytes(), &[], window(), 5).is_err());
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("20240504120000 +0100").unwrap().to_rfc3339(),
            "2024-05-04T12:00:00+01:00"
        );
        assert_eq!(
            parse_time("202405041200").unwrap().to_rfc3339(),
            "2024-05-04T12:00:00+00:00"
        );
        assert_eq!(
            parse_time("20240504120000-0530").unwrap().to_rfc3339(),
            "2024-05-04T12:00:00-05:30"
        );
        assert!(parse_time("2024").is_none() && parse_time("20240504120000 XYZ").is_none());
    }
}
