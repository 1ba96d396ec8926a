//! Reading snapshot files: the only place the CLI touches the files that `proxier-core` parses.
//!
//! Each path is a file (read whatever its name) or a directory, read recursively for `*.yaml`, `*.yml` and
//! `*.json` files (extension matched without regard to case) in sorted path order. Inside a directory, entries
//! whose name starts with `.` are skipped: that keeps out editor and VCS files and the `..data` links of a
//! mounted ConfigMap, which would otherwise load every file twice. Symbolic links are followed; a directory
//! reached twice (a link loop) is read once. The path `-` is stdin, as in kubectl (`-f -`).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use proxier_core::snapshot::{LoadReport, Snapshot};

/// Why the snapshot could not be read. Problems inside the files are not errors: they are in the
/// [`LoadReport`].
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path (or an entry under a directory) could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    /// A file is not UTF-8 text.
    #[error("{} is not UTF-8 text (invalid byte at offset {offset})", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    /// `-` (stdin) was given more than once.
    #[error("stdin (-) can be read only once")]
    StdinTwice,
    /// A directory holds no snapshot file.
    #[error("no snapshot files (*.yaml, *.yml, *.json) found under {}", dir.display())]
    NoFiles { dir: PathBuf },
}

/// Reads every snapshot path: a file, or a directory read recursively for *.yaml, *.yml and *.json files in sorted order.
///
/// Files are loaded in the order given (each directory's files sorted by path), so for an object defined
/// twice the later file wins (with a warning in the report). No paths give an empty snapshot.
pub fn load_snapshot(paths: &[PathBuf]) -> Result<(Snapshot, LoadReport), InputError> {
    let mut snapshot = Snapshot::default();
    let mut report = LoadReport::default();
    let mut stdin_read = false;
    for path in paths {
        if path.as_os_str() == "-" {
            // Stdin holds one stream: a second `-` would find it empty, so it is an error, not silence.
            if std::mem::replace(&mut stdin_read, true) {
                return Err(InputError::StdinTwice);
            }
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut io::stdin().lock(), &mut bytes).map_err(|error| unreadable(path, error))?;
            let text = utf8(path, bytes)?;
            snapshot.add_text("<stdin>", &text, &mut report);
            continue;
        }
        for file in snapshot_files(path)? {
            let text = read_text(&file)?;
            snapshot.add_text(&file.display().to_string(), &text, &mut report);
        }
    }
    Ok((snapshot, report))
}

/// The files to read for one path: the path itself if it is a file, else the snapshot files under it.
fn snapshot_files(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let metadata = fs::metadata(path).map_err(|error| unreadable(path, error))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    collect(path, &mut files, &mut visited)?;
    if files.is_empty() {
        return Err(InputError::NoFiles { dir: path.to_owned() });
    }
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>, visited: &mut HashSet<PathBuf>) -> Result<(), InputError> {
    // A directory already read through another link (or a loop) is skipped.
    let canonical = fs::canonicalize(dir).map_err(|error| unreadable(dir, error))?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(|error| unreadable(dir, error))? {
        let entry = entry.map_err(|error| unreadable(dir, error))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `fs::metadata` follows links: a link to a directory is read as one.
        let metadata = fs::metadata(&path).map_err(|error| unreadable(&path, error))?;
        if metadata.is_dir() {
            collect(&path, files, visited)?;
        } else if metadata.is_file() && is_snapshot_file(&path) {
            files.push(path);
        }
    }
    Ok(())
}

fn is_snapshot_file(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| ["yaml", "yml", "json"].iter().any(|e| extension.eq_ignore_ascii_case(e)))
}

fn read_text(path: &Path) -> Result<String, InputError> {
    let bytes = fs::read(path).map_err(|error| unreadable(path, error))?;
    utf8(path, bytes)
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, InputError> {
    String::from_utf8(bytes)
        .map_err(|error| InputError::NotUtf8 { path: path.to_owned(), offset: error.utf8_error().valid_up_to() })
}

fn unreadable(path: &Path, error: io::Error) -> InputError {
    InputError::Unreadable { path: path.to_owned(), error }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("proxier-input-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, relative: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn node(name: &str) -> String {
        format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n")
    }

    fn service(name: &str, cluster_ip: &str) -> String {
        format!(
            "{{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {{\"name\": \"{name}\", \"namespace\": \
             \"default\"}}, \"spec\": {{\"clusterIP\": \"{cluster_ip}\"}}}}"
        )
    }

    fn node_names(snapshot: &Snapshot) -> Vec<&str> {
        snapshot.nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect()
    }

    #[test]
    fn reads_directories_recursively_in_sorted_order() {
        let dir = TempDir::new("recursive");
        dir.write("b/nodes.yml", node("n2").as_bytes());
        dir.write("a.yaml", node("n1").as_bytes());
        // Same Service twice: `b/svc.JSON` sorts after `a/svc.json`, so its definition wins.
        dir.write("a/svc.json", service("web", "10.0.0.1").as_bytes());
        dir.write("b/svc.JSON", service("web", "10.0.0.2").as_bytes());
        dir.write("notes.txt", b"not a snapshot");
        dir.write(".hidden/n.yaml", node("hidden").as_bytes());
        dir.write("..data/n.yaml", node("configmap-link").as_bytes());

        let (snapshot, report) = load_snapshot(std::slice::from_ref(&dir.0)).unwrap();
        assert_eq!(node_names(&snapshot), ["n1", "n2"]);
        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.services[0].spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.0.0.2"));
        let messages: Vec<String> = report.diagnostics.iter().map(ToString::to_string).collect();
        let (first, second) = (dir.0.join("a/svc.json"), dir.0.join("b/svc.JSON"));
        assert_eq!(
            messages,
            [format!(
                "warning: {}: Service default/web: duplicate object: this definition replaces the one from {}",
                second.display(),
                first.display()
            )]
        );
    }

    #[test]
    fn reads_named_files_whatever_their_extension_and_keeps_problems_in_the_report() {
        let dir = TempDir::new("files");
        let first = dir.write("snapshot.txt", node("n1").as_bytes());
        let second = dir.write("bad.yaml", b"apiVersion: v1\nkind: Node\nmetadata: {}\n");
        let (snapshot, report) = load_snapshot(&[first, second.clone()]).unwrap();
        assert_eq!(node_names(&snapshot), ["n1"]);
        assert_eq!(report.diagnostics.len(), 1);
        assert_eq!(report.diagnostics[0].source.as_deref(), Some(second.display().to_string().as_str()));
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let dir = TempDir::new("missing");
        let missing = dir.0.join("nope.yaml");
        let error = load_snapshot(std::slice::from_ref(&missing)).unwrap_err();
        assert!(matches!(&error, InputError::Unreadable { path, error } if path == &missing
            && error.kind() == io::ErrorKind::NotFound));
        assert!(error.to_string().starts_with(&format!("cannot read {}: ", missing.display())), "{error}");
    }

    #[test]
    fn a_directory_without_snapshot_files_is_an_error() {
        let dir = TempDir::new("empty");
        dir.write("README.md", b"# nothing");
        let error = load_snapshot(std::slice::from_ref(&dir.0)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("no snapshot files (*.yaml, *.yml, *.json) found under {}", dir.0.display())
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_is_an_error_naming_it() {
        let dir = TempDir::new("utf8");
        let file = dir.write("latin1.yaml", b"kind: Node # caf\xe9\n");
        let error = load_snapshot(std::slice::from_ref(&dir.0)).unwrap_err();
        assert_eq!(error.to_string(), format!("{} is not UTF-8 text (invalid byte at offset 16)", file.display()));
    }

    #[cfg(unix)]
    #[test]
    fn a_link_loop_is_read_once() {
        let dir = TempDir::new("loop");
        dir.write("sub/n.yaml", node("n1").as_bytes());
        std::os::unix::fs::symlink(&dir.0, dir.0.join("sub/back")).unwrap();
        let (snapshot, report) = load_snapshot(std::slice::from_ref(&dir.0)).unwrap();
        assert_eq!(node_names(&snapshot), ["n1"]);
        assert!(report.diagnostics.is_empty());
    }

    #[test]
    fn no_paths_give_an_empty_snapshot() {
        let (snapshot, report) = load_snapshot(&[]).unwrap();
        assert!(snapshot.nodes.is_empty() && snapshot.services.is_empty());
        assert!(report.diagnostics.is_empty());
    }
}
