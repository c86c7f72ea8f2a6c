//! From providers' entries to Amps channels. Pure: filters, stable ids, numbers, merging.
//!
//! **Stable ids.** An imported channel's id is derived from the provider's name and the
//! entry's most stable key: Xtream's `stream_id`, else its `tvg-id` (when unique in the
//! list), else its URL without the query, else its name. The key is hashed into the
//! reserved range [`RESERVED_IDS`].. (config and API ids stay below it, so they never
//! collide). A key keeps the id it had at the last import (`previous`), so a new entry
//! whose hash collides never takes an existing channel's id; new collisions are resolved
//! by hashing again, in key order, so the outcome does not depend on the entries' order.
//!
//! **Merging.** A channel whose `tvg-id` an earlier provider already imported becomes a
//! backup source of that channel (failover switches between providers).

use super::m3u::Entry;
pub use crate::config::RESERVED_IDS;
use crate::config::{BackupSource, PlaylistConfig, StreamConfig};
use std::collections::{BTreeMap, HashMap, HashSet};

/// An id in the reserved range for `(provider, key)`; `attempt` > 0 after a collision.
pub fn id_for(provider: &str, key: &str, attempt: u32) -> u32 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(provider.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update(attempt.to_le_bytes());
    let d = h.finalize();
    let n = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    RESERVED_IDS + n % (u32::MAX - RESERVED_IDS)
}

/// A glob with `*` and `?`, compared case-insensitively.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A playlist's filters, compiled.
pub struct Filter {
    include_groups: Vec<String>,
    exclude_groups: Vec<String>,
    include_names: Option<regex::Regex>,
    exclude_names: Option<regex::Regex>,
}

use crate::config::validate::compile_name_filter as compile;

impl Filter {
    pub fn new(p: &PlaylistConfig) -> Result<Filter, String> {
        let re = |o: &Option<String>, key: &str| -> Result<Option<regex::Regex>, String> {
            o.as_deref()
                .map(|r| compile(r).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        Ok(Filter {
            include_groups: p.include_groups.clone(),
            exclude_groups: p.exclude_groups.clone(),
            include_names: re(&p.include_names, "include_names")?,
            exclude_names: re(&p.exclude_names, "exclude_names")?,
        })
    }

    pub fn keeps(&self, e: &Entry) -> bool {
        let group = e.group.as_deref().unwrap_or("");
        (self.include_groups.is_empty() || self.include_groups.iter().any(|g| glob_match(g, group)))
            && !self.exclude_groups.iter().any(|g| glob_match(g, group))
            && self
                .include_names
                .as_ref()
                .is_none_or(|r| r.is_match(&e.name))
            && !self
                .exclude_names
                .as_ref()
                .is_some_and(|r| r.is_match(&e.name))
    }
}

/// Keys of `entries`, each unique; None for an entry that repeats another's (same URL).
pub fn keys(entries: &[&Entry]) -> Vec<Option<String>> {
    let mut tvg: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        if let Some(t) = e.tvg_id.as_deref() {
            *tvg.entry(t).or_default() += 1;
        }
    }
    let mut seen = HashSet::new();
    entries
        .iter()
        .map(|e| {
            let url = e.url.split('?').next().unwrap_or(&e.url);
            let candidates = [
                e.stream_id.map(|id| format!("stream:{id}")),
                e.tvg_id
                    .as_deref()
                    .filter(|t| tvg.get(t) == Some(&1))
                    .map(|t| format!("tvg:{t}")),
                Some(format!("url:{url}")),
                Some(format!("name:{}\u{0}{}", e.name, e.url)),
            ];
            candidates
                .into_iter()
                .flatten()
                .find(|k| !seen.contains(k))
                .inspect(|k| {
                    seen.insert(k.clone());
                })
        })
        .collect()
}

/// What one provider's import produced.
#[derive(Debug, Default)]
pub struct Imported {
    pub channels: Vec<StreamConfig>,
    /// key -> id, to keep ids at the next import.
    pub ids: BTreeMap<String, u32>,
    /// Entries the filters left out.
    pub filtered: usize,
    /// Entries that repeat another (same key).
    pub duplicates: usize,
}

/// One character-safe line of at most `max` characters (names from providers).
fn clip(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Imports one provider's entries. `taken`: ids already used (earlier providers); ids
/// given here are added to it.
pub fn import(
    p: &PlaylistConfig,
    filter: &Filter,
    entries: &[Entry],
    previous: &BTreeMap<String, u32>,
    taken: &mut HashSet<u32>,
) -> Imported {
    let kept: Vec<&Entry> = entries.iter().filter(|e| filter.keeps(e)).collect();
    let mut out = Imported {
        filtered: entries.len() - kept.len(),
        ..Imported::default()
    };
    let keys = keys(&kept);
    // Keys that had an id keep it; then the new ones, in key order.
    let mut order: Vec<usize> = (0..kept.len()).filter(|i| keys[*i].is_some()).collect();
    order.sort_by_key(|i| {
        (
            !previous.contains_key(keys[*i].as_deref().unwrap_or("")),
            keys[*i].clone(),
        )
    });
    let mut ids = vec![0u32; kept.len()];
    for i in order {
        let key = keys[i].as_deref().unwrap_or_default();
        let id = match previous.get(key).filter(|id| !taken.contains(id)) {
            Some(id) => *id,
            None => (0..)
                .map(|a| id_for(&p.name, key, a))
                .find(|id| !taken.contains(id))
                .unwrap_or(RESERVED_IDS),
        };
        taken.insert(id);
        ids[i] = id;
        out.ids.insert(key.to_owned(), id);
    }
    let mut next_number = p.number_start;
    let origin = format!("playlist:{}", p.name);
    for (i, e) in kept.iter().enumerate() {
        if keys[i].is_none() {
            out.duplicates += 1;
            continue;
        }
        let number = e.number.unwrap_or_else(|| {
            let n = next_number;
            next_number = next_number.saturating_add(1);
            n
        });
        let mut input_options = BTreeMap::new();
        if let Some(ua) = e.user_agent.as_ref().or(p.user_agent.as_ref()) {
            input_options.insert("user_agent".to_owned(), clip(ua, 512));
        }
        if let Some(r) = &e.referrer {
            input_options.insert("referer".to_owned(), clip(r, 2048));
        }
        // An explicit merge rule: this entry is the channel with that tvg-id.
        let merged_tvg = p
            .merge
            .get(&e.name)
            .or_else(|| e.tvg_id.as_ref().and_then(|t| p.merge.get(t)))
            .cloned();
        out.channels.push(StreamConfig {
            id: ids[i],
            name: clip(&e.name, 200),
            source: e.url.clone(),
            loop_source: false,
            always_on: false,
            catchup_hours: 0,
            backup_sources: Vec::new(),
            ffmpeg_profile: Some(p.ffmpeg_profile.clone()),
            profiles: Vec::new(),
            input_options,
            origin: Some(origin.clone()),
            custom_ffmpeg: None,
            tvg_id: merged_tvg.or_else(|| {
                e.tvg_id
                    .as_deref()
                    .map(|t| clip(t, 200))
                    .filter(|t| !t.is_empty())
            }),
            tvg_name: e
                .tvg_name
                .as_deref()
                .map(|t| clip(t, 200))
                .filter(|t| !t.is_empty()),
            logo: e
                .logo
                .as_deref()
                .map(|t| clip(t, 2048))
                .filter(|t| !t.is_empty()),
            group: e
                .group
                .as_deref()
                .map(|t| clip(t, 200))
                .filter(|t| !t.is_empty()),
            channel_number: Some(number.max(1)),
            description: None,
            program_feed: None,
            next_programs: Vec::new(),
            schedule: None,
        });
    }
    out
}

/// Folds channels that carry a `tvg_id` an earlier channel already has into that one, as
/// its backup sources (in order). Returns how many were folded.
pub fn merge(channels: &mut Vec<StreamConfig>) -> usize {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut keep = vec![true; channels.len()];
    let mut backups: Vec<(usize, BackupSource)> = Vec::new();
    for (i, c) in channels.iter().enumerate() {
        let Some(t) = c.tvg_id.clone() else { continue };
        match first.get(&t) {
            Some(&j) if channels[j].origin != c.origin => {
                keep[i] = false;
                backups.push((
                    j,
                    BackupSource {
                        source: c.source.clone(),
                        input_options: c.input_options.clone(),
                    },
                ));
            }
            Some(_) => {}
            None => {
                first.insert(t, i);
            }
        }
    }
    let folded = backups.len();
    for (j, b) in backups {
        channels[j].backup_sources.push(b);
    }
    let mut i = 0;
    channels.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(name: &str) -> PlaylistConfig {
        serde_yaml::from_str(&format!(
            "{{name: {name}, url: 'http://p/x.m3u', ffmpeg_profile: relay}}"
        ))
        .unwrap()
    }

    fn entry(name: &str, tvg: Option<&str>, group: &str, url: &str) -> Entry {
        Entry {
            name: name.into(),
            tvg_id: tvg.map(Into::into),
            group: Some(group.into()),
            url: url.into(),
            ..Entry::default()
        }
    }

    #[test]
    fn globs_match_case_insensitively_without_backtracking_blowup() {
        assert!(glob_match("UK*", "uk | News"));
        assert!(glob_match("*adult*", "XXX ADULT 18+"));
        assert!(glob_match("Sp?rts", "Sports"));
        assert!(!glob_match("UK*", "US News"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
        let long = "a".repeat(5000);
        assert!(!glob_match(
            &"*a".repeat(50).to_string().replace("*a*a", "*a*b"),
            &long
        ));
    }

    #[test]
    fn filters_then_stable_ids_across_reorder_and_rename() {
        let mut p = playlist("prov");
        p.include_groups = vec!["UK*".into(), "Sports".into()];
        p.exclude_groups = vec!["*Adult*".into()];
        p.include_names = Some("(?i)\\b(hd|fhd)\\b".into());
        let f = Filter::new(&p).unwrap();
        let entries = vec![
            entry("BBC One HD", Some("bbc1"), "UK News", "http://p/1"),
            entry("BBC Two HD", Some("bbc2"), "UK News", "http://p/2?tok=1"),
            entry("Sky Sports FHD", None, "Sports", "http://p/3"),
            entry("Night HD", None, "UK Adult", "http://p/4"),
            entry("CNN HD", None, "US", "http://p/5"),
            entry("ITV SD", None, "UK", "http://p/6"),
        ];
        let mut taken = HashSet::new();
        let a = import(&p, &f, &entries, &BTreeMap::new(), &mut taken);
        assert_eq!(a.filtered, 3);
        let names: Vec<&str> = a.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["BBC One HD", "BBC Two HD", "Sky Sports FHD"]);
        assert!(a.channels.iter().all(|c| c.id >= RESERVED_IDS));
        assert_eq!(
            a.channels
                .iter()
                .map(|c| c.channel_number)
                .collect::<Vec<_>>(),
            [Some(1000), Some(1001), Some(1002)]
        );
        assert_eq!(a.channels[0].origin.as_deref(), Some("playlist:prov"));

        // Reordered, renamed, the query (a rotating provider token) changed: same ids.
        let again = vec![
            entry("Sky Sports FHD", None, "Sports", "http://p/3"),
            entry("BBC 2 HD", Some("bbc2"), "UK News", "http://p/2?tok=2"),
            entry("BBC One HD", Some("bbc1"), "UK News", "http://p/1"),
        ];
        let b = import(&p, &f, &again, &a.ids, &mut HashSet::new());
        let id_of = |i: &Imported, n: &str| i.channels.iter().find(|c| c.name == n).unwrap().id;
        assert_eq!(id_of(&a, "BBC One HD"), id_of(&b, "BBC One HD"));
        assert_eq!(id_of(&a, "BBC Two HD"), id_of(&b, "BBC 2 HD"));
        assert_eq!(id_of(&a, "Sky Sports FHD"), id_of(&b, "Sky Sports FHD"));
        // Without the previous ids too: the ids are a function of the keys alone.
        let c = import(&p, &f, &again, &BTreeMap::new(), &mut HashSet::new());
        assert_eq!(id_of(&c, "BBC 2 HD"), id_of(&a, "BBC Two HD"));
    }

    #[test]
    fn collisions_never_take_a_known_channels_id() {
        let p = playlist("prov");
        let f = Filter::new(&p).unwrap();
        let e = vec![entry("A", Some("a"), "G", "http://p/a")];
        let first = import(&p, &f, &e, &BTreeMap::new(), &mut HashSet::new());
        let id = first.channels[0].id;
        // Another provider already holds that id: this one gets the next hash.
        let mut taken = HashSet::from([id]);
        let other = import(&p, &f, &e, &BTreeMap::new(), &mut taken);
        assert_ne!(other.channels[0].id, id);
        assert_eq!(other.channels[0].id, id_for("prov", "tvg:a", 1));
    }

    #[test]
    fn duplicates_are_dropped_and_shared_tvg_ids_fall_back_to_urls() {
        let p = playlist("prov");
        let f = Filter::new(&p).unwrap();
        let e = vec![
            entry("A HD", Some("a"), "G", "http://p/1"),
            entry("A SD", Some("a"), "G", "http://p/2"),
            entry("A again", None, "G", "http://p/2"),
        ];
        let i = import(&p, &f, &e, &BTreeMap::new(), &mut HashSet::new());
        assert_eq!(i.channels.len(), 3, "the third differs by name");
        assert!(i.ids.contains_key("url:http://p/1"));
        let ids: HashSet<u32> = i.channels.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn an_explicit_merge_rule_folds_an_entry_of_another_name() {
        let p1 = playlist("one");
        let mut p2 = playlist("two");
        p2.merge.insert("BBC 1 FHD".into(), "bbc1".into());
        p2.merge.insert("itv.other".into(), "itv".into());
        let mut taken = HashSet::new();
        let one = [
            entry("BBC One", Some("bbc1"), "G", "http://one/1"),
            entry("ITV", Some("itv"), "G", "http://one/2"),
        ];
        let two = [
            entry("BBC 1 FHD", Some("bbc1.fhd"), "G", "http://two/1"),
            entry("ITV HD", Some("itv.other"), "G", "http://two/2"),
            entry("Other", Some("o"), "G", "http://two/3"),
        ];
        let mut all = import(
            &p1,
            &Filter::new(&p1).unwrap(),
            &one,
            &BTreeMap::new(),
            &mut taken,
        )
        .channels;
        let second = import(
            &p2,
            &Filter::new(&p2).unwrap(),
            &two,
            &BTreeMap::new(),
            &mut taken,
        );
        // The id still comes from the entry's own key: a rule added later moves no id.
        assert_eq!(second.channels[0].id, id_for("two", "tvg:bbc1.fhd", 0));
        all.extend(second.channels);
        assert_eq!(merge(&mut all), 2, "by name and by tvg-id");
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["BBC One", "ITV", "Other"]);
        assert_eq!(all[0].backup_sources[0].source, "http://two/1");
        assert_eq!(all[1].backup_sources[0].source, "http://two/2");
    }

    #[test]
    fn the_same_tvg_id_from_two_providers_is_one_channel_with_a_backup() {
        let (p1, p2) = (playlist("one"), playlist("two"));
        let mut taken = HashSet::new();
        let mut all = import(
            &p1,
            &Filter::new(&p1).unwrap(),
            &[entry("BBC", Some("bbc1"), "G", "http://one/1")],
            &BTreeMap::new(),
            &mut taken,
        )
        .channels;
        let mut e = entry("BBC One", Some("bbc1"), "G", "http://two/9");
        e.user_agent = Some("UA".into());
        all.extend(
            import(
                &p2,
                &Filter::new(&p2).unwrap(),
                &[e, entry("ITV", Some("itv"), "G", "http://two/2")],
                &BTreeMap::new(),
                &mut taken,
            )
            .channels,
        );
        assert_eq!(merge(&mut all), 1);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].source, "http://one/1");
        assert_eq!(all[0].backup_sources[0].source, "http://two/9");
        assert_eq!(all[0].backup_sources[0].input_options["user_agent"], "UA");
    }
}
