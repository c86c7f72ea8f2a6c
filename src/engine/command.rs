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
    word.replace("{source}", &q(&stream.source))
        .replace("{id}", &q(&stream.id.to_string()))
        .replace("{name}", &q(&stream.name))
}

/// The program and its arguments.
pub fn argv(cmd: &CustomFfmpeg, stream: &StreamConfig) -> Result<Vec<String>, String> {
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
    Ok(words.iter().map(|w| substitute(w, stream, false)).collect())
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
        let a = argv(&cmd("echo {name} | cat", true), &s).unwrap();
        assert_eq!(a[..2], ["/bin/sh", "-c"]);
        assert_eq!(a[2], "echo 'a'\\''b; echo pwned' | cat");
    }

    #[test]
    fn unbalanced_quotes_are_an_error() {
        assert!(argv(&cmd("ffmpeg -i 'x", false), &stream("n", "s"))
            .unwrap_err()
            .contains("custom_ffmpeg.command"));
    }

    proptest! {
        #[test]
        fn any_name_is_exactly_one_argument(name in any::<String>()) {
            let a = argv(&cmd("prog --title {name} end", false), &stream(&name, "s")).unwrap();
            prop_assert_eq!(a.len(), 4);
            prop_assert_eq!(&a[2], &name);
        }

        #[test]
        fn with_a_shell_any_name_comes_back_verbatim(name in "[^\\x00]{0,40}") {
            let a = argv(&cmd("printf %s {name}", true), &stream(&name, "s")).unwrap();
            let out = std::process::Command::new(&a[0]).args(&a[1..]).output().unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout).into_owned(), name);
        }
    }
}
