//! Every runnable example in the docs runs against the real binary (scripts/docs-examples
//! says which blocks run and how), so the docs cannot drift from the code.

use std::process::Command;

#[test]
fn every_example_in_the_docs_works() {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/docs-examples"
    ))
    .arg(env!("CARGO_BIN_EXE_amps"))
    .output()
    .expect("run scripts/docs-examples");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // "docs examples: N run, M failed"
    let counts: Vec<usize> = text
        .lines()
        .find_map(|l| l.strip_prefix("docs examples: "))
        .map(|l| {
            l.split(", ")
                .filter_map(|w| w.split(' ').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(counts.len(), 2, "no summary line: {text}");
    // Every tagged block ran: as many as the docs hold (counted here, independently of
    // the script), none skipped, none failed.
    let tagged = tagged_blocks();
    assert!(
        tagged >= 40,
        "the docs lost their runnable examples: {tagged}"
    );
    assert_eq!(counts, [tagged, 0], "{text}");
}

/// Fenced blocks the script runs: ```sh test, ```yaml test, ```yaml fragment and
/// ```yaml prometheus in README.md and docs/*.md.
fn tagged_blocks() -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            files.push(e.path());
        }
    }
    let tags = ["sh test", "yaml test", "yaml fragment", "yaml prometheus"];
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| {
                    l.strip_prefix("```")
                        .is_some_and(|t| tags.contains(&t.trim()))
                })
                .count()
        })
        .sum()
}
