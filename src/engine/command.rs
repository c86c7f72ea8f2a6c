//! Turning a `custom_ffmpeg` setting into an argv. Pure: no I/O.
//!
//! Without a shell the command is split into words first (shell-words rules: quotes and
//! backslashes work as in sh) and the placeholders `{source}`, `{id}`, `{name}` are
//! substituted inside each word, so a value can never add an argument or a command. With
//! `shell: true` the command runs under `/bin/sh -c` and each substituted value is
//! shell-quoted first.

use crate::config::{CustomFfmpeg, StreamConfig};

fn substitute(word: &str, stream: &StreamConfig, quote: bool) -> String {
    let q = |v: &str| {
        if quote {
            shell_words::quote(v).into_owned()
        } else {
            v.to_owned()
        }
    };
    // One pass over the template: inserted values are never searched again, so a value
    // containing `{name}` cannot pull another value into its own quotes.
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (value, len) = if tail.starts_with("{source}") {
            (Some(q(&stream.source)), "{source}".len())
        } else if tail.starts_with("{id}") {
            (Some(q(&stream.id.to_string())), "{id}".len())
        } else if tail.starts_with("{name}") {
            (Some(q(&stream.name)), "{name}".len())
        } else {
            (None, 1)
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push('{'),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// The program and its arguments. `ffmpeg_path` replaces a leading `ffmpeg` word (not in
/// shell mode, where the shell resolves programs).
pub fn argv(
    cmd: &CustomFfmpeg,
    stream: &StreamConfig,
    ffmpeg_path: Option<&str>,
) -> Result<Vec<String>, String> {
    if cmd.shell {
        return Ok(vec![
            "/bin/sh".into(),
            "-c".into(),
            substitute(&cmd.command, stream, true),
        ]);
    }
    let words =
        shell_words::split(&cmd.command).map_err(|e| format!("custom_ffmpeg.command: {e}"))?;
    if words.is_empty() {
        return Err("custom_ffmpeg.command is empty".into());
    }
    let mut argv: Vec<String> = words.iter().map(|w| substitute(w, stream, false)).collect();
    if let (Some(p), "ffmpeg") = (ffmpeg_path, argv[0].as_str()) {
        argv[0] = p.to_owned();
    }
    Ok(argv)
}

/// The program a command runs first (the shell's first word in shell mode).
pub fn program(cmd: &CustomFfmpeg, ffmpeg_path: Option<&str>) -> Option<String> {
    let first = shell_words::split(&cmd.command).ok()?.into_iter().next()?;
    match (ffmpeg_path, first.as_str()) {
        (Some(p), "ffmpeg") if !cmd.shell => Some(p.to_owned()),
        _ => Some(first),
    }
}

/// Whether `program` can be executed: an existing executable path, or found in `path`.
pub fn executable(program: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return runnable(std::path::Path::new(program));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .any(|d| runnable(&std::path::Path::new(d).join(program)))
}

/// One line per missing program, naming the channels that need it.
pub fn missing_programs<'a>(
    streams: impl Iterator<Item = &'a StreamConfig>,
    ffmpeg_path: Option<&str>,
    path: &str,
) -> Vec<String> {
    let mut missing: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in streams {
        let Some(cmd) = &s.custom_ffmpeg else {
            continue;
        };
        if let Some(p) = program(cmd, ffmpeg_path) {
            if !executable(&p, path) {
                missing
                    .entry(p)
                    .or_default()
                    .push(format!("{} ({:?})", s.id, s.name));
            }
        }
    }
    missing
        .into_iter()
        .map(|(p, chans)| {
            format!(
                "{p:?} is not installed or not in PATH; needed by channel {}",
                chans.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(name: &str, source: &str) -> StreamConfig {
        let mut s: StreamConfig =
            serde_yaml::from_str("{id: 7, name: x, source: y, custom_ffmpeg: z}").unwrap();
        s.name = name.into();
        s.source = source.into();
        s
    }

    fn cmd(c: &str, shell: bool) -> CustomFfmpeg {
        CustomFfmpeg {
            command: c.into(),
            shell,
            cwd: None,
            env: Default::default(),
        }
    }

    #[test]
    fn words_are_split_before_substitution() {
        let s = stream("My \"Chan\"; rm -rf / $(id)", "http://h/a b.ts");
        let a = argv(
            &cmd(
                "ffmpeg -i {source} -metadata 'title={name} ({id})' -f mpegts pipe:1",
                false,
            ),
            &s,
            None,
        )
        .unwrap();
        assert_eq!(
            a,
            vec![
                "ffmpeg",
                "-i",
                "http://h/a b.ts",
                "-metadata",
                "title=My \"Chan\"; rm -rf / $(id) (7)",
                "-f",
                "mpegts",
                "pipe:1"
            ]
        );
    }

    #[test]
    fn shell_mode_quotes_each_value() {
        let s = stream("a'b; echo pwned", "x");
        let a = argv(&cmd("echo {name} | cat", true), &s, None).unwrap();
        assert_eq!(a[..2], ["/bin/sh", "-c"]);
        assert_eq!(a[2], "echo 'a'\\''b; echo pwned' | cat");
    }

    #[test]
    fn ffmpeg_path_replaces_a_leading_ffmpeg_and_missing_programs_are_named() {
        let s = stream("n", "s");
        let a = argv(
            &cmd("ffmpeg -i {source}", false),
            &s,
            Some("/opt/ff/bin/ffmpeg"),
        )
        .unwrap();
        assert_eq!(a[0], "/opt/ff/bin/ffmpeg");
        assert!(executable("sh", "/usr/bin:/bin"));
        assert!(!executable("no-such-program-amps", "/usr/bin:/bin"));
        let mut s = s;
        s.custom_ffmpeg = Some(cmd("sh -c true", false));
        let mut s2 = s.clone();
        s2.custom_ffmpeg = Some(cmd("no-such-program-amps -x", false));
        let m = missing_programs([&s, &s2].into_iter(), None, "/usr/bin:/bin");
        assert_eq!(m, vec!["\"no-such-program-amps\" is not installed or not in PATH; needed by channel 7 (\"n\")"]);
    }

    #[test]
    fn inserted_values_are_never_substituted_again() {
        let s = stream("x;echo INJECTED >&2;y", "http://h/a?x=1&n={name}");
        let a = argv(&cmd("ffmpeg -i {source} -t {name}", true), &s, None).unwrap();
        assert_eq!(
            a[2],
            "ffmpeg -i 'http://h/a?x=1&n={name}' -t 'x;echo INJECTED >&2;y'"
        );
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &a[2].replacen("ffmpeg", "printf %s\\\\n", 1)])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stderr).contains("INJECTED"));
        let b = argv(&cmd("p {source}", false), &s, None).unwrap();
        assert_eq!(b, vec!["p", "http://h/a?x=1&n={name}"]);
    }

    #[test]
    fn unbalanced_quotes_are_an_error() {
        assert!(argv(&cmd("ffmpeg -i 'x", false), &stream("n", "s"), None)
            .unwrap_err()
            .contains("custom_ffmpeg.command"));
    }

    proptest! {
        #[test]
        fn any_name_is_exactly_one_argument(name in any::<String>()) {
            let a = argv(&cmd("prog --title {name} end", false), &stream(&name, "s"), None).unwrap();
            prop_assert_eq!(a.len(), 4);
            prop_assert_eq!(&a[2], &name);
        }

        #[test]
        fn with_a_shell_any_name_comes_back_verbatim(name in "[^\\x00]{0,40}") {
            let a = argv(&cmd("printf %s {name}", true), &stream(&name, "s"), None).unwrap();
            let out = std::process::Command::new(&a[0]).args(&a[1..]).output().unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout).into_owned(), name);
        }
    }
}
