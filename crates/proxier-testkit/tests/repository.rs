//! Guards on the repository itself, so its text stays true:
//!
//! - every repository path named in the docs (`*.md`, including relative Markdown links) and in the
//!   sources, manifests and scripts exists;
//! - no project file points outside the repository: no path into the workspace's `shared` folder beside it, no issue or pull-request numbers
//!   (`issue 12`, `#12`), whose tracker is not part of the repository;
//! - no crate declares a dependency its code does not use (what `cargo machete` checks, without
//!   installing it in CI), and no workspace dependency is left that no crate uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level entries a path in the text may start with.
const ROOTS: &[&str] = &[".ci/", ".cargo/", "crates/", "deploy/", "docs/", "fuzz/", "scripts/", "testdata/"];

/// Directories that are build output or local fuzzing state, not project files (see .gitignore files).
const IGNORED_DIRS: &[&str] =
    &[".git", "target", "target-fast", "corpus", "artifacts", "coverage", "logs", "node_modules"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every project text file, as (path relative to the repository, contents), sorted.
fn project_files() -> Vec<(String, String)> {
    // Skips this file: it spells out the patterns it looks for, to test the checks themselves.
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        const THIS_FILE: &str = "crates/proxier-testkit/tests/repository.rs";
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !IGNORED_DIRS.contains(&name.as_str()) {
                    walk(root, &path, out);
                }
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if relative != THIS_FILE {
                    out.push((relative, text));
                }
            }
        }
    }
    let root = repository();
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    assert!(files.iter().any(|(path, _)| path == "README.md"), "the walk found no README.md");
    files
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./".contains(c)
}

/// Repository paths named in `text`: words starting with one of [`ROOTS`], not part of a longer path
/// (`../../testdata/x` names `testdata/x`, but `src/docs/x` names nothing), without trailing
/// punctuation. Paths with placeholders (`*`, `<…>`, `{…}`, `…`) are patterns, not names, and skipped.
fn named_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for root in ROOTS {
        for (at, _) in text.match_indices(root) {
            let before = text[..at].chars().next_back();
            let part_of_longer = before.is_some_and(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                || (before == Some('/') && !text[..at].ends_with("../"));
            if part_of_longer {
                continue;
            }
            let rest = &text[at..];
            let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
            if rest[end..].starts_with(['*', '<', '{', '…']) {
                continue;
            }
            let path = rest[..end].trim_end_matches(['.', ',', ':', ';']);
            paths.push(path.to_owned());
        }
    }
    paths
}

/// Targets of relative Markdown links, `[text](target)`, resolved against the file's directory.
fn markdown_links(file: &str, text: &str) -> Vec<String> {
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    let mut links = Vec::new();
    for (at, _) in text.match_indices("](") {
        let rest = &text[at + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split('#').next().unwrap_or("");
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        links.push(dir.join(target).to_string_lossy().into_owned());
    }
    links
}

#[test]
fn every_repository_path_named_in_docs_and_comments_exists() {
    let root = repository();
    let mut missing = BTreeSet::new();
    let mut checked = 0;
    for (file, text) in project_files() {
        // Test data is cluster state and rendered rules, not prose.
        if file.starts_with("testdata/") || file.ends_with(".lock") || file.starts_with("fuzz/seeds/") {
            continue;
        }
        let mut paths = named_paths(&text);
        if file.ends_with(".md") {
            paths.extend(markdown_links(&file, &text));
        }
        for path in paths {
            // Build output and fuzzing state are made by the commands the docs show.
            if path.split('/').any(|part| IGNORED_DIRS.contains(&part)) {
                continue;
            }
            checked += 1;
            if !root.join(&path).exists() {
                missing.insert(format!("{file}: {path}"));
            }
        }
    }
    assert!(checked > 50, "only {checked} paths found: the scan is broken");
    assert!(missing.is_empty(), "paths named but not in the repository:\n{}", Vec::from_iter(missing).join("\n"));
}

/// The relative path into the workspace's reference folder, built so this file does not name it itself.
const SHARED: &str = concat!("..", "/", "shared");

/// Where `text` points at something outside the repository: the `shared` folder beside it, or an issue or pull-request
/// number (`issue 12`, `issues 3 and 4`, `PR 7`, `#12`). Links to public pages (`https://…`) are fine.
fn outside_pointers(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        if lower.contains(SHARED) || lower.contains("/work/shared") {
            found.push(format!("line {}: {}", number + 1, line.trim()));
            continue;
        }
        let words: Vec<&str> = lower.split(|c: char| c.is_whitespace() || "(),;:`*\"'[]".contains(c)).collect();
        let numbered = words.windows(2).any(|pair| {
            ["issue", "issues", "pr", "prs", "ticket"].contains(&pair[0])
                && pair[1].trim_start_matches('#').starts_with(|c: char| c.is_ascii_digit())
        });
        let hash_number = words
            .iter()
            .any(|word| word.strip_prefix('#').is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())));
        if numbered || hash_number {
            found.push(format!("line {}: {}", number + 1, line.trim()));
        }
    }
    found
}

#[test]
fn no_project_file_points_outside_the_repository() {
    let mut found = Vec::new();
    for (file, text) in project_files() {
        // Lock files list registry checksums; fuzz seeds are inputs.
        if file.ends_with(".lock") || file.starts_with("fuzz/seeds/") {
            continue;
        }
        found.extend(outside_pointers(&text).into_iter().map(|hit| format!("{file}: {hit}")));
    }
    assert!(found.is_empty(), "pointers outside the repository:\n{}", found.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert_eq!(
        named_paths("see `docs/robustness.md`, and ../../testdata/clusters."),
        ["docs/robustness.md", "testdata/clusters"]
    );
    assert!(named_paths("src/docs/x crates/*/tests foo_crates/x").is_empty());
    assert_eq!(markdown_links("docs/a.md", "[b](b.md#top) [c](https://x.org/d)"), ["docs/b.md"]);
    assert_eq!(outside_pointers(&format!("as in issue 12\nfixed (#7)\nsee {SHARED}/x\nPR 3\n")).len(), 4);
    assert!(outside_pointers("nftables v1.0.6 (Lester Gooch #5)x #[path] #a1 issue tracker 0x12").len() == 1);
    assert!(outside_pointers("https://github.com/kubernetes/kubernetes/pull/130119 color #fff").is_empty());
    assert_eq!(dependency_names("[dependencies]\na.workspace = true\nb-c = \"1\"\n[features]\nx = []\n"), ["a", "b-c"]);
    assert!(uses_crate("use a_b::c;", "a-b") && uses_crate("x: a_b::C", "a-b") && !uses_crate("xa_b::C", "a-b"));
}

/// The dependency names declared under `[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`
/// and `[workspace.dependencies]` of a manifest.
fn dependency_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.ends_with("dependencies]");
            continue;
        }
        if !in_dependencies || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let name = key.trim().trim_end_matches(".workspace").trim();
            names.push(name.to_owned());
        }
    }
    names
}

/// Whether Rust source mentions the crate `name` as a path root (`name::…`, `use name`, `name!`).
fn uses_crate(source: &str, name: &str) -> bool {
    let ident = name.replace('-', "_");
    source.match_indices(&ident).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = &source[at + ident.len()..];
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && (after.starts_with("::")
                || after.starts_with('!')
                || after.starts_with(';')
                || after.starts_with(" as "))
    })
}

fn rust_sources(dir: &Path) -> String {
    let mut text = String::new();
    if dir.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() && !IGNORED_DIRS.contains(&path.file_name().unwrap().to_string_lossy().as_ref()) {
                text.push_str(&rust_sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    text
}

#[test]
fn every_declared_dependency_is_used() {
    let root = repository();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut packages: Vec<PathBuf> =
        std::fs::read_dir(root.join("crates")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    packages.push(root.join("fuzz"));
    packages.sort();
    let mut unused = Vec::new();
    let mut declared_by_members = BTreeSet::new();
    for package in &packages {
        let manifest = std::fs::read_to_string(package.join("Cargo.toml")).unwrap();
        let sources = rust_sources(package);
        for name in dependency_names(&manifest) {
            // A crate's own Cargo features (k8s-openapi's Kubernetes version) count as a use only
            // through code that names the crate, like any other.
            if !uses_crate(&sources, &name) {
                unused.push(format!("{}: {name}", package.strip_prefix(&root).unwrap().display()));
            }
            declared_by_members.insert(name);
        }
    }
    for name in dependency_names(&workspace) {
        if !declared_by_members.contains(&name) {
            unused.push(format!("Cargo.toml [workspace.dependencies]: {name}"));
        }
    }
    assert!(unused.is_empty(), "dependencies declared but not used:\n{}", unused.join("\n"));
}

/// `scripts/ab.sh`, with which docs/performance.md's side-by-side figures are reproduced, times two
/// commands in turn and tells the slower one.
#[test]
fn the_side_by_side_timing_script_works() {
    #[allow(clippy::disallowed_methods)] // The script is what is tested.
    let output = std::process::Command::new("bash")
        .arg(repository().join("scripts/ab.sh"))
        .args(["2", "sleep 0.3", "true"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let wall = |line: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("no {line} in {text}"));
        line.split_whitespace().nth(2).unwrap().trim_end_matches(',').parse().unwrap()
    };
    assert!(wall("A:") >= 0.3 && wall("B:") < 0.3, "{text}");
    assert!(wall("A/B:") > 1.0, "{text}");
    assert!(text.contains("runs 2"), "{text}");
}
