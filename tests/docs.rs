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
    let ran: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("docs examples: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // The docs hold at least this many runnable examples; fewer means blocks lost their tag.
    assert!(ran >= 1, "{text}");
}
