//! The console examples of the README and docs/troubleshooting.md ([`DOCUMENTS`]), replayed through the
//! real binary so they cannot drift: every
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

/// The documents whose console examples are replayed.
const DOCUMENTS: [&str; 2] = ["README.md", "docs/troubleshooting.md"];

/// The namespace name the README's root examples use.
const README_NETNS: &str = "demo";

/// One command of a console block and the output shown after it.
#[derive(Debug)]
struct Example {
    /// The document it is in.
    document: &'static str,
    /// The document's line the command is on (1-based), for messages.
    line: usize,
    root: bool,
    command: String,
    output: String,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every command of every console block of every document, in order.
fn all_examples() -> Vec<Example> {
    DOCUMENTS
        .iter()
        .flat_map(|document| {
            let text = std::fs::read_to_string(repository().join(document)).unwrap();
            examples(document, &text)
        })
        .collect()
}

/// Every command of every console block of one document, in order.
fn examples(document: &'static str, readme: &str) -> Vec<Example> {
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
            examples.push(Example {
                document,
                line: index + 1,
                root,
                command: command.to_owned(),
                output: String::new(),
            });
        } else {
            let example =
                examples.last_mut().unwrap_or_else(|| panic!("{document} line {}: output before a command", index + 1));
            example.output.push_str(line);
            example.output.push('\n');
        }
    }
    assert!(!in_console, "{document}: a console block is not closed");
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
        .map_err(|e| format!("{} line {}: cannot run sh: {e}", example.document, example.line))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout == example.output {
        return Ok(());
    }
    Err(format!(
        "{} line {}: `{}` prints something else now.\n--- document\n{}--- actual (exit {:?}; stderr: {})\n{}",
        example.document,
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
    let examples: Vec<Example> = all_examples().into_iter().filter(|e| !e.root).collect();
    // render, explain and two traces: a parser that found fewer would be testing nothing.
    assert!(examples.len() >= 4, "found only {} user examples: {examples:?}", examples.len());
    let failures: Vec<String> = examples.iter().filter_map(|e| replay(e, None).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn readme_root_examples_print_what_the_readme_shows() {
    let examples: Vec<Example> = all_examples().into_iter().filter(|e| e.root).collect();
    assert!(examples.len() >= 4, "found only {} root examples: {examples:?}", examples.len());
    let Some(netns) = Netns::for_test("readme_root_examples_print_what_the_readme_shows") else { return };
    let mut failures = Vec::new();
    for example in &examples {
        // The namespace itself is the test's: created above, deleted on drop.
        let lifecycle = [format!("ip netns add {README_NETNS}"), format!("ip netns del {README_NETNS}")];
        if lifecycle.contains(&example.command) {
            assert!(
                example.output.is_empty(),
                "{} line {}: output after {}",
                example.document,
                example.line,
                example.command
            );
            continue;
        }
        assert!(
            example.command.contains(&format!("ip netns exec {README_NETNS} ")),
            "{} line {}: a root example must run inside the `{README_NETNS}` namespace: {}",
            example.document,
            example.line,
            example.command
        );
        if let Err(failure) = replay(example, Some(netns.name())) {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_proxier")).args(args).output().expect("run proxier");
    assert!(output.status.success(), "proxier {args:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The subcommands `proxier --help` lists (without `help`).
fn subcommands() -> Vec<String> {
    let top = help(&["--help"]);
    let list = top.split("Commands:\n").nth(1).expect("a Commands section").split("\n\n").next().unwrap_or("");
    list.lines()
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_cli_section_agrees_with_help() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let section = readme.split("\n## CLI\n").nth(1).expect("README has a CLI section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let block = section.split("```text\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a text block");
    let commands = subcommands();
    assert!(commands.len() >= 10, "{commands:?}");
    let usages: Vec<String> = commands
        .iter()
        .map(|command| {
            let text = help(&[command, "--help"]);
            let usage = text.lines().find_map(|l| l.strip_prefix("Usage: ")).expect("a Usage line");
            usage.to_owned()
        })
        .collect();
    assert_eq!(block.lines().collect::<Vec<_>>(), usages, "the README's command list is not what --help prints");

    // Every flag of every command is described somewhere in the README.
    let mut missing = Vec::new();
    for command in &commands {
        let text = help(&[command, "--help"]);
        // Option lines: `  -o, --output <FORMAT>` or `      --node <NAME>`.
        let options =
            text.lines().map(str::trim_start).filter(|l| l.starts_with('-')).map(|l| l.split("  ").next().unwrap_or(l));
        for word in options.flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')) {
            let Some(flag) =
                word.strip_prefix("--").filter(|f| f.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
            else {
                continue;
            };
            let flag: String = flag.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            if ["help", "version"].contains(&flag.as_str()) {
                continue;
            }
            let described = readme.match_indices(&format!("--{flag}")).any(|(at, found)| {
                readme[at + found.len()..].chars().next().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '-')
            });
            if !described {
                missing.push(format!("{command} --{flag}"));
            }
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "flags --help shows that the README does not describe: {missing:?}");
}
