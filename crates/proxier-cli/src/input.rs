//! Reading snapshot files: the only place the CLI touches the files that `proxier-core` parses.
//!
//! Each path is a file (read whatever its name) or a directory, read recursively for `*.yaml`, `*.yml` and
//! `*.json` files (extension matched without regard to case) in sorted path order. Inside a directory, entries
//! whose name starts with `.` are skipped: that keeps out editor and VCS files and the `..data` links of a
//! mounted ConfigMap, which would otherwise load every file twice. Symbolic links are followed; a directory
//! reached twice (a link loop) is read once. The path `-` is stdin, as in kubectl (`-f -`).
//!
//! Fail closed: a file that cannot be read as a whole (not UTF-8, a syntax error, a List cut short, empty)
//! is an error, and so the whole snapshot is: nothing is computed from part of it. Only inside a directory
//! is a file that holds no Kubernetes objects at all (no document with `kind` or `apiVersion`: a version or
//! permissions file of a support bundle, say) skipped, and named in [`Loaded::skipped_files`].

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use proxier_core::snapshot::{LoadReport, Snapshot, TextContents, TextError};

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
    /// A file is not YAML or JSON as a whole (a syntax error, a List cut short).
    #[error("unreadable snapshot {}: {error}", path.display())]
    Unparseable { path: PathBuf, error: TextError },
    /// A file holds nothing (no document, or only comments and `---`).
    #[error("unreadable snapshot {}: the file is empty", path.display())]
    Empty { path: PathBuf },
    /// A file named on the command line holds documents, but none is a Kubernetes object.
    #[error("unreadable snapshot {}: no Kubernetes objects in it (no document has `kind` or `apiVersion`)", path.display())]
    NotKubernetes { path: PathBuf },
    /// A directory's snapshot files hold no Kubernetes objects at all.
    #[error(
        "no Kubernetes objects found under {} (no document of its snapshot files has `kind` or `apiVersion`)",
        dir.display()
    )]
    NoObjects { dir: PathBuf },
}

/// A snapshot read from files, with what was found besides the objects.
#[derive(Debug, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub report: LoadReport,
    /// Files under a directory that hold no Kubernetes objects, skipped (in the order read).
    pub skipped_files: Vec<PathBuf>,
}

impl Loaded {
    /// Prints the notes of files and kinds skipped on stderr (the diagnostics of loading are printed
    /// with the model's, summarised: see [`crate::notes`]).
    pub fn print_skipped(&self) {
        if let Some(note) = self.skipped_files_note() {
            eprintln!("proxier: note: {note}");
        }
        if let Some(note) = self.report.skipped_note() {
            eprintln!("proxier: note: {note}");
        }
    }

    /// Adds one file's text (stdin is the path `-`); returns whether it held Kubernetes objects. A file
    /// without any is skipped inside a directory and refused when named on its own.
    fn add_file(&mut self, path: PathBuf, text: &str, in_directory: bool) -> Result<bool, InputError> {
        let source = if path.as_os_str() == "-" { "<stdin>".to_owned() } else { path.display().to_string() };
        match self.snapshot.add_text(&source, text, &mut self.report) {
            Ok(TextContents::Objects(_)) => Ok(true),
            Ok(TextContents::Empty) => Err(InputError::Empty { path }),
            Ok(TextContents::NotKubernetes) if in_directory => {
                self.skipped_files.push(path);
                Ok(false)
            }
            Ok(TextContents::NotKubernetes) => Err(InputError::NotKubernetes { path }),
            Err(error) => Err(InputError::Unparseable { path, error }),
        }
    }

    /// `skipped 2 files that hold no Kubernetes objects: A, B`, or `None`.
    pub fn skipped_files_note(&self) -> Option<String> {
        if self.skipped_files.is_empty() {
            return None;
        }
        let noun = if self.skipped_files.len() == 1 { "file that holds" } else { "files that hold" };
        let names: Vec<String> = self.skipped_files.iter().map(|p| p.display().to_string()).collect();
        Some(format!("skipped {} {noun} no Kubernetes objects: {}", names.len(), names.join(", ")))
    }
}

/// Reads every snapshot path: a file, or a directory read recursively for *.yaml, *.yml and *.json files in sorted order.
///
/// Files are loaded in the order given (each directory's files sorted by path), so for an object defined
/// twice the later file wins (with a warning in the report). No paths give an empty snapshot. The first
/// file that cannot be read as a whole ends it with an error: nothing is returned.
pub fn load_snapshot(paths: &[PathBuf]) -> Result<Loaded, InputError> {
    let mut loaded = Loaded::default();
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
            loaded.add_file(path.clone(), &text, false)?;
            continue;
        }
        let in_directory = fs::metadata(path).is_ok_and(|m| m.is_dir());
        let mut objects = false;
        for file in snapshot_files(path)? {
            let text = read_text(&file)?;
            objects |= loaded.add_file(file, &text, in_directory)?;
        }
        if in_directory && !objects {
            return Err(InputError::NoObjects { dir: path.clone() });
        }
    }
    Ok(loaded)
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
    let bytes = read_file(path).map_err(|error| unreadable(path, error))?;
    utf8(path, bytes)
}

/// Files from this size on are read in parts on every core: a 44k-Service dump is 430 MB, and most of
/// reading it is the kernel filling fresh pages, which goes as fast on each core as on one.
const PARALLEL_READ: u64 = 32 << 20;

/// The whole file, as `fs::read` reads it.
fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let Ok(len) = usize::try_from(size) else { return Err(io::ErrorKind::OutOfMemory.into()) };
    if size < PARALLEL_READ || threads < 2 {
        let mut bytes = Vec::with_capacity(len);
        io::Read::read_to_end(&mut file, &mut bytes)?;
        return Ok(bytes);
    }
    let mut bytes = vec![0; len];
    let part = len.div_ceil(threads);
    let file = &file;
    std::thread::scope(|scope| {
        let parts: Vec<_> = bytes
            .chunks_mut(part)
            .enumerate()
            .map(|(i, chunk)| scope.spawn(move || file.read_exact_at(chunk, (i * part) as u64)))
            .collect();
        parts.into_iter().try_for_each(|part| part.join().unwrap_or_else(|_| Err(io::ErrorKind::Other.into())))
    })?;
    // A file that grew while it was read is read to its end, as `fs::read` would; one that shrank fails
    // above (`read_exact_at`: unexpected end of file).
    let mut rest = file;
    io::Seek::seek(&mut rest, io::SeekFrom::Start(size))?;
    io::Read::read_to_end(&mut rest, &mut bytes)?;
    Ok(bytes)
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
    fn large_files_read_in_parts_read_whole() {
        let dir = TempDir::new("large");
        // Not a multiple of anything, and no two parts alike.
        let size = usize::try_from(PARALLEL_READ).unwrap() + 12_345;
        let contents: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect();
        let path = dir.write("big.json", &contents);
        assert!(read_file(&path).unwrap() == contents);
        let small = dir.write("small.json", b"{}");
        assert_eq!(read_file(&small).unwrap(), b"{}");
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

        let Loaded { snapshot, report, .. } = load_snapshot(std::slice::from_ref(&dir.0)).unwrap();
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
        let Loaded { snapshot, report, .. } = load_snapshot(&[first, second.clone()]).unwrap();
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
        let Loaded { snapshot, report, .. } = load_snapshot(std::slice::from_ref(&dir.0)).unwrap();
        assert_eq!(node_names(&snapshot), ["n1"]);
        assert!(report.diagnostics.is_empty());
    }

    #[test]
    fn one_unreadable_file_refuses_the_whole_snapshot() {
        let dir = TempDir::new("refused");
        dir.write("a.yaml", node("n1").as_bytes());
        let bad = dir.write("b/cut.json", b"{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"na");
        let error = load_snapshot(std::slice::from_ref(&dir.0)).unwrap_err();
        assert!(matches!(&error, InputError::Unparseable { path, .. } if path == &bad), "{error}");
        let empty = dir.write("c.yaml", b"# nothing\n---\n");
        std::fs::remove_file(&bad).unwrap();
        let error = load_snapshot(std::slice::from_ref(&dir.0)).unwrap_err();
        assert_eq!(error.to_string(), format!("unreadable snapshot {}: the file is empty", empty.display()));
    }

    #[test]
    fn files_without_kubernetes_objects_are_skipped_only_inside_directories() {
        let dir = TempDir::new("foreign");
        dir.write("a.yaml", node("n1").as_bytes());
        let version = dir.write("version.json", b"{\"major\": \"1\"}");
        let loaded = load_snapshot(std::slice::from_ref(&dir.0)).unwrap();
        assert_eq!(node_names(&loaded.snapshot), ["n1"]);
        assert_eq!(loaded.skipped_files, std::slice::from_ref(&version));
        assert_eq!(
            loaded.skipped_files_note().unwrap(),
            format!("skipped 1 file that holds no Kubernetes objects: {}", version.display())
        );
        let error = load_snapshot(std::slice::from_ref(&version)).unwrap_err();
        assert!(matches!(&error, InputError::NotKubernetes { path } if path == &version), "{error}");
    }

    #[test]
    fn no_paths_give_an_empty_snapshot() {
        let Loaded { snapshot, report, .. } = load_snapshot(&[]).unwrap();
        assert!(snapshot.nodes.is_empty() && snapshot.services.is_empty());
        assert!(report.diagnostics.is_empty());
    }
}
