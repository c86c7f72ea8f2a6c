//! The layering of `src/` stays true: every `crate::`, `super::` and child-module path in
//! the library's code (test modules aside) points down the layers or within a layer, and
//! no two files reach each other through a circle. Read from the source text, so a new
//! upward `use` fails here before review.
//!
//! Layers, lowest first: base helpers (`error`, `clock`, `auth`, `sync`) -> `config` ->
//! the registry and what is computed from it (`registry`, `playlist`, `epg`, `schedule`,
//! `state`, `reload`, `providers`) -> the media engine (`engine`, `libav`) -> `metrics` -> `http` ->
//! the commands (`cmds`, `fuzz`) -> `lib`/`main`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or("");
    match top {
        "error" | "clock" | "auth" | "sync" => 0,
        "config" => 1,
        "registry" | "playlist" | "epg" | "schedule" | "state" | "reload" | "tokens"
        | "providers" => 2,
        "engine" | "libav" => 3,
        "metrics" => 4,
        "http" => 5,
        "cmds" | "fuzz" => 6,
        "" => 7,
        other => panic!("module {other:?} has no layer: add it to tests/layers.rs"),
    }
}

/// Every `.rs` file under `dir` as (module path, text).
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            let p = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}::{name}")
            };
            modules(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = match name.as_str() {
                "mod" | "lib" | "main" => prefix.to_owned(),
                _ if prefix.is_empty() => name,
                _ => format!("{prefix}::{name}"),
            };
            out.insert(module, std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The code without comments, string literals and `#[cfg(test)]` items.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    // Drop `#[cfg(test)]` items: from the attribute to the end of its braces.
    while let Some(at) = out.find("#[cfg(test)]") {
        let open = out[at..].find('{').map(|o| at + o);
        let Some(open) = open else { break };
        let mut depth = 0;
        let mut end = out.len();
        for (i, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..end, "");
    }
    out
}

/// The paths a module's code names: `crate::a::b`, `super::x` (groups expanded one
/// level), and `child::x` for its own child modules; each resolved to the longest known
/// module prefix.
fn edges(
    module: &str,
    is_dir_module: bool,
    text: &str,
    known: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let here: Vec<&str> = if module.is_empty() {
        vec![]
    } else {
        module.split("::").collect()
    };
    let parent: Vec<&str> = if is_dir_module || here.is_empty() {
        here.iter()
            .take(here.len().saturating_sub(1))
            .copied()
            .collect()
    } else {
        here[..here.len() - 1].to_vec()
    };
    let resolve = |base: &[&str], rest: &str, found: &mut BTreeSet<String>| {
        let mut parts: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        parts.extend(
            rest.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        for n in (1..=parts.len()).rev() {
            let cand = parts[..n].join("::");
            if known.contains(&cand) {
                if cand != module {
                    found.insert(cand);
                }
                return;
            }
        }
    };
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b':') {
            i += 1;
        }
        let path = text[start..i].trim_end_matches(':');
        let group = text[i..].starts_with('{') && text[start..i].ends_with("::");
        let (head, rest) = path.split_once("::").unwrap_or((path, ""));
        let base: Option<Vec<&str>> = match head {
            "crate" => Some(vec![]),
            "super" => Some(parent.clone()),
            "self" => Some(here.clone()),
            h if known.contains(&[module, h].join("::").trim_start_matches("::").to_owned())
                && path.contains("::") =>
            {
                Some(here.clone())
            }
            _ => None,
        };
        // `pub(super)` is visibility, not a path.
        let visibility = head == "super" && rest.is_empty() && text[i..].starts_with(')');
        let Some(base) = base.filter(|_| !visibility) else {
            continue;
        };
        let rest_full = if matches!(head, "crate" | "super" | "self") {
            rest.to_owned()
        } else {
            path.to_owned()
        };
        if group {
            let close = text[i..].find('}').map_or(text.len(), |c| i + c);
            for item in text[i + 1..close].split(',') {
                let item = item.trim().split(" as ").next().unwrap_or("").trim();
                let joined = if rest_full.is_empty() {
                    item.to_owned()
                } else {
                    format!("{rest_full}::{item}")
                };
                resolve(&base, &joined, &mut found);
            }
            i = close;
        } else {
            resolve(&base, &rest_full, &mut found);
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut files,
    );
    let known: BTreeSet<String> = files.keys().cloned().collect();
    let dirs: BTreeSet<String> = {
        let mut d = BTreeSet::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for m in &known {
            if src.join(m.replace("::", "/")).join("mod.rs").exists() {
                d.insert(m.clone());
            }
        }
        d
    };
    files
        .iter()
        .map(|(m, t)| (m.clone(), edges(m, dirs.contains(m), &code(t), &known)))
        .collect()
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let g = graph();
    let mut up = Vec::new();
    for (from, tos) in &g {
        for to in tos {
            if layer(to) > layer(from) {
                up.push(format!(
                    "{from} (layer {}) -> {to} (layer {})",
                    layer(from),
                    layer(to)
                ));
            }
        }
    }
    assert!(up.is_empty(), "upward edges:\n{}", up.join("\n"));
    // The check sees real edges (a reader that found nothing would pass any tree).
    assert!(
        g["engine::pipeline"].contains("engine::timeline"),
        "{:?}",
        g["engine::pipeline"]
    );
    assert!(g["http::dispatch"].contains("http::routes"));
    assert!(g["engine"].contains("engine::channel"), "{:?}", g["engine"]);
    assert!(
        g["registry"].contains("config::source"),
        "{:?}",
        g["registry"]
    );
}

#[test]
fn no_two_files_reach_each_other() {
    let g = graph();
    // Tarjan's strongly connected components.
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        circles: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let l = t.low[v].min(t.low[w]);
                t.low.insert(v, l);
            } else if t.on.contains(w) {
                let l = t.low[v].min(t.index[w]);
                t.low.insert(v, l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w);
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.circles.push(c);
            }
        }
    }
    let mut t = T {
        g: &g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        circles: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    assert!(t.circles.is_empty(), "import circles: {:?}", t.circles);
}
