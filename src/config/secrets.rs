//! Where named tokens' secrets come from: inline `token`, a `token_file` (a Docker or
//! systemd secret) or a `token_env` variable. Resolved once per load; every problem names
//! the key and never the secret.

use super::model::Config;
use super::validate::Issue;

/// Fills `secret` of every `server.tokens` entry; returns the problems found.
pub fn resolve_token_secrets(cfg: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (i, t) in cfg.server.tokens.iter_mut().enumerate() {
        let at = |key: &str| {
            if key.is_empty() {
                format!("server.tokens[{i}]")
            } else {
                format!("server.tokens[{i}].{key}")
            }
        };
        let given = [&t.token, &t.token_file, &t.token_env]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            issues.push(Issue {
                path: at(""),
                message: format!(
                    "{:?}: give exactly one of token, token_file and token_env",
                    t.name
                ),
            });
            continue;
        }
        let (key, secret) = if let Some(v) = &t.token {
            ("token", Ok(v.clone()))
        } else if let Some(f) = &t.token_file {
            (
                "token_file",
                std::fs::read_to_string(f)
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|e| format!("cannot read {f:?}: {e}")),
            )
        } else {
            let var = t.token_env.as_deref().unwrap_or_default();
            (
                "token_env",
                env(var)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("the environment variable {var:?} is not set")),
            )
        };
        match secret {
            Err(message) => issues.push(Issue {
                path: at(key),
                message,
            }),
            Ok(s) if s.chars().count() < 16 => issues.push(Issue {
                path: at(key),
                message: "the token must be at least 16 characters (e.g. `openssl rand -hex 16`)"
                    .into(),
            }),
            Ok(s) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => issues.push(Issue {
                path: at(key),
                message: "the token must not contain spaces or control characters".into(),
            }),
            Ok(s) => t.secret = Some(s),
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn each_source_resolves_and_problems_name_the_key_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tv");
        std::fs::write(&file, "file-secret-0123456789\n").unwrap();
        let yaml = format!(
            "server:\n  tokens:\n    - {{name: a, token: inline-secret-0123456789}}\n    - {{name: b, token_file: {:?}}}\n    - {{name: c, token_env: TV_TOKEN}}\n    - {{name: d, token_env: UNSET}}\n    - {{name: e, token: short}}\n    - {{name: f}}\n    - {{name: g, token: x, token_env: TV_TOKEN}}\n    - {{name: h, token_file: /nonexistent/amps-token}}\n",
            file.display()
        );
        let mut c = cfg(&yaml);
        let env = |k: &str| (k == "TV_TOKEN").then(|| "env-secret-0123456789".to_owned());
        let issues = resolve_token_secrets(&mut c, &env);
        let t = &c.server.tokens;
        assert_eq!(t[0].secret.as_deref(), Some("inline-secret-0123456789"));
        assert_eq!(t[1].secret.as_deref(), Some("file-secret-0123456789"));
        assert_eq!(t[2].secret.as_deref(), Some("env-secret-0123456789"));
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.tokens[3].token_env",
                "server.tokens[4].token",
                "server.tokens[5]",
                "server.tokens[6]",
                "server.tokens[7].token_file"
            ]
        );
        for i in &issues {
            assert!(!i.message.contains("short") && !i.message.contains("secret-0123"));
        }
    }
}
