//! Xtream Codes accounts: the API's URLs and its JSON, turned into playlist entries.
//! Pure: the caller fetches.
//!
//! `player_api.php?username=&password=&action=get_live_categories` gives
//! `[{category_id, category_name}]`; `action=get_live_streams` gives `[{num, name,
//! stream_id, stream_icon, epg_channel_id, category_id, tv_archive,
//! tv_archive_duration}]`, where panels send numbers as numbers or as strings, and
//! `null` for anything. A stream plays at `<server>/live/<user>/<pass>/<stream_id>.ts`;
//! the guide is `xmltv.php?username=&password=`.

use super::m3u::Entry;
use crate::config::XtreamAccount;
use serde_json::Value;
use std::collections::HashMap;

fn enc(s: &str) -> String {
    crate::auth::encode_for_query(s)
}

fn server(a: &XtreamAccount) -> &str {
    a.server.trim_end_matches('/')
}

/// The URL of an API action.
pub fn api_url(a: &XtreamAccount, action: &str) -> String {
    format!(
        "{}/player_api.php?username={}&password={}&action={action}",
        server(a),
        enc(&a.username),
        enc(&a.password)
    )
}

/// The account's XMLTV guide.
pub fn guide_url(a: &XtreamAccount) -> String {
    format!(
        "{}/xmltv.php?username={}&password={}",
        server(a),
        enc(&a.username),
        enc(&a.password)
    )
}

fn stream_url(a: &XtreamAccount, stream_id: u64) -> String {
    format!(
        "{}/live/{}/{}/{stream_id}.ts",
        server(a),
        enc(&a.username),
        enc(&a.password)
    )
}

/// A JSON value as text (panels send ids both as 12 and as "12").
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn uint(v: Option<&Value>) -> Option<u64> {
    text(v)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n >= 0.0 && *n < 1e15)
        .map(|n| n as u64)
}

/// What the two JSON answers hold.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    /// Streams without a name or a stream id.
    pub skipped: usize,
    pub truncated: bool,
}

/// Turns `get_live_categories` and `get_live_streams` answers into entries (at most
/// `max_entries`). An answer that is not a JSON array is an error naming the action.
pub fn parse(
    a: &XtreamAccount,
    categories: &[u8],
    streams: &[u8],
    max_entries: usize,
) -> Result<Parsed, String> {
    let array = |bytes: &[u8], action: &str| -> Result<Vec<Value>, String> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Array(v)) => Ok(v),
            // Panels answer `{"user_info": {"auth": 0}}` to a wrong password.
            Ok(Value::Object(o)) if o.contains_key("user_info") => Err(format!(
                "{action}: the server refused the account (wrong username or password?)"
            )),
            Ok(_) => Err(format!("{action}: the answer is not a JSON list")),
            Err(e) => Err(format!("{action}: the answer is not JSON: {e}")),
        }
    };
    let groups: HashMap<String, String> = array(categories, "get_live_categories")?
        .iter()
        .filter_map(|c| Some((text(c.get("category_id"))?, text(c.get("category_name"))?)))
        .collect();
    let mut out = Parsed::default();
    for s in array(streams, "get_live_streams")? {
        let (Some(name), Some(id)) = (text(s.get("name")), uint(s.get("stream_id"))) else {
            out.skipped += 1;
            continue;
        };
        if out.entries.len() >= max_entries {
            out.truncated = true;
            break;
        }
        let archive = uint(s.get("tv_archive")).unwrap_or(0) > 0;
        out.entries.push(Entry {
            name,
            url: stream_url(a, id),
            tvg_id: text(s.get("epg_channel_id")),
            tvg_name: None,
            logo: text(s.get("stream_icon")).filter(|u| u.starts_with("http")),
            group: text(s.get("category_id")).and_then(|c| groups.get(&c).cloned()),
            number: uint(s.get("num"))
                .filter(|n| (1..1_000_000_000).contains(n))
                .map(|n| n as u32),
            tvg_shift: None,
            catchup_days: archive
                .then(|| uint(s.get("tv_archive_duration")).map(|d| d.min(3650) as u32))
                .flatten(),
            user_agent: None,
            referrer: None,
            stream_id: Some(id),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> XtreamAccount {
        XtreamAccount {
            server: "http://xc:8080/".into(),
            username: "u s".into(),
            password: "p&w".into(),
        }
    }

    #[test]
    fn urls_carry_the_account_encoded() {
        let a = account();
        assert_eq!(
            api_url(&a, "get_live_streams"),
            "http://xc:8080/player_api.php?username=u%20s&password=p%26w&action=get_live_streams"
        );
        assert_eq!(
            guide_url(&a),
            "http://xc:8080/xmltv.php?username=u%20s&password=p%26w"
        );
    }

    #[test]
    fn reads_both_number_shapes_and_nulls() {
        let cats = br#"[{"category_id":"1","category_name":"UK News"},{"category_id":2,"category_name":"Sports"}]"#;
        let streams = br#"[
          {"num":1,"name":"BBC One","stream_id":101,"stream_icon":"http://i/1.png","epg_channel_id":"bbc1.uk","category_id":"1","tv_archive":1,"tv_archive_duration":"7"},
          {"num":"2","name":"Sky","stream_id":"102","stream_icon":"","epg_channel_id":null,"category_id":"2","tv_archive":0,"tv_archive_duration":0},
          {"num":3,"name":null,"stream_id":103},
          {"num":4,"name":"No id"}
        ]"#;
        let p = parse(&account(), cats, streams, 10).unwrap();
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.skipped, 2);
        let a = &p.entries[0];
        assert_eq!(a.url, "http://xc:8080/live/u%20s/p%26w/101.ts");
        assert_eq!(
            (
                a.group.as_deref(),
                a.tvg_id.as_deref(),
                a.catchup_days,
                a.number
            ),
            (Some("UK News"), Some("bbc1.uk"), Some(7), Some(1))
        );
        let b = &p.entries[1];
        assert_eq!(
            (b.group.as_deref(), b.tvg_id.as_deref(), b.logo.as_deref()),
            (Some("Sports"), None, None)
        );
        assert_eq!(
            (b.stream_id, b.catchup_days, b.number),
            (Some(102), None, Some(2))
        );
    }

    #[test]
    fn refusals_and_junk_are_errors_naming_the_action() {
        let a = account();
        let e = parse(&a, b"[]", br#"{"user_info":{"auth":0}}"#, 10).unwrap_err();
        assert!(e.contains("refused the account"), "{e}");
        let e = parse(&a, b"<html>", b"[]", 10).unwrap_err();
        assert!(
            e.starts_with("get_live_categories: the answer is not JSON"),
            "{e}"
        );
    }
}
