//! The README's console examples, replayed through the real binary so they cannot drift: every
//! ```` ```console ```` block is a list of commands (`$ ` for a user, `# ` for root) each followed by
//! the output it prints. Commands run with `sh -c` in `testdata/` (where the walkthrough `cd`s to), with
//! the `proxier` under test first on `PATH`; stdout must equal the output shown, byte for byte.
//!
//! Root examples use a network namespace named `demo`; here it is a fresh namespace of the test's own
//! (the name is substituted), so the host's ruleset and namespaces are never touched. Without root or
//! nft they are skipped with a `SKIP` line (a failure under `PROXIER_REQUIRE_NETNS=1`).

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::{Path, PathBuf};
use std::process::Command;

use proxier_testkit::Netns;

/// The namespace name the README's root examples use.
const README_NETNS: &str = "demo";

/// One command of a console block and the output shown after it.
#[derive(Debug)]
struct Example {
    /// The README line the command is on (1-based), for messages.
    line: usize,
    root: bool,
    command: String,
    output: String,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every command of every console block, in order.
fn examples(readme: &str) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    let mut in_console = false;
    for (index, line) in readme.lines().enumerate() {
        if !in_console {
            in_console = line == "```console";
            continue;
        }
        if line == "```" {
            in_console = false;
        } else if let Some((root, command)) =
            line.strip_prefix("$ ").map(|c| (false, c)).or_else(|| line.strip_prefix("# ").map(|c| (true, c)))
        {
            examples.push(Example { line: index + 1, root, command: command.to_owned(), output: String::new() });
        } else {
            let example =
                examples.last_mut().unwrap_or_else(|| panic!("README line {}: output before a command", index + 1));
            example.output.push_str(line);
            example.output.push('\n');
        }
    }
    assert!(!in_console, "README: a console block is not closed");
    examples
}

/// Runs one example (with `demo` replaced by `netns`) and compares its stdout with the README.
fn replay(example: &Example, netns: Option<&str>) -> Result<(), String> {
    let mut command = example.command.clone();
    if let Some(name) = netns {
        command = command.replace(&format!("ip netns exec {README_NETNS} "), &format!("ip netns exec {name} "));
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_proxier")).parent().expect("the binary is in a directory");
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH entries hold no separator");
    let output = Command::new("sh")
        .args(["-c", &command])
        .current_dir(repository().join("testdata"))
        .env("PATH", path)
        .output()
        .map_err(|e| format!("README line {}: cannot run sh: {e}", example.line))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout == example.output {
        return Ok(());
    }
    Err(format!(
        "README line {}: `{}` prints something else now.\n--- README\n{}--- actual (exit {:?}; stderr: {})\n{}",
        example.line,
        example.command,
        example.output,
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).trim(),
        stdout
    ))
}

#[test]
fn readme_user_examples_print_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let examples: Vec<Example> = examples(&readme).into_iter().filter(|e| !e.root).collect();
    // render, explain and two traces: a parser that found fewer would be testing nothing.
    assert!(examples.len() >= 4, "found only {} user examples: {examples:?}", examples.len());
    let failures: Vec<String> = examples.iter().filter_map(|e| replay(e, None).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn readme_root_examples_print_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let examples: Vec<Example> = examples(&readme).into_iter().filter(|e| e.root).collect();
    assert!(examples.len() >= 4, "found only {} root examples: {examples:?}", examples.len());
    let Some(netns) = Netns::for_test("readme_root_examples_print_what_the_readme_shows") else { return };
    let mut failures = Vec::new();
    for example in &examples {
        // The namespace itself is the test's: created above, deleted on drop.
        let lifecycle = [format!("ip netns add {README_NETNS}"), format!("ip netns del {README_NETNS}")];
        if lifecycle.contains(&example.command) {
            assert!(example.output.is_empty(), "README line {}: output after {}", example.line, example.command);
            continue;
        }
        assert!(
            example.command.contains(&format!("ip netns exec {README_NETNS} ")),
            "README line {}: a root example must run inside the `{README_NETNS}` namespace: {}",
            example.line,
            example.command
        );
        if let Err(failure) = replay(example, Some(netns.name())) {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
