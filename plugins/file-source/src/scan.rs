//! Reading the definitions directory and putting its files together into one
//! desired set: every good file's services, one problem per bad file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::definitions::{self, Format, Service};

/// A definition file larger than this is reported instead of read: the
/// plugin runs under a memory cap, and one stray large file must not stop
/// every other file from applying.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// One file of the directory, read or not.
pub struct Input {
    /// The file's path: the directory joined with the file name.
    pub origin: String,
    /// The file's format and text, or why it could not be read.
    pub content: Result<(Format, String), String>,
}

/// A service and the file it comes from.
#[derive(Debug, PartialEq, Eq)]
pub struct Registered {
    pub origin: String,
    pub service: Service,
}

/// A file that contributes nothing this time, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub origin: String,
    /// Names the file, and the line and field when there is one.
    pub message: String,
}

/// The directory's desired set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// How many definition files there were (good or bad).
    pub files: usize,
    pub registrations: Vec<Registered>,
    pub problems: Vec<Problem>,
}

/// Reads every definition file in `dir` (not recursively), in name order.
///
/// An error only when the directory itself cannot be listed (missing, not
/// granted, or failing half-way): then there is no complete set, and the
/// node must keep the previous one. A file that cannot be read is a
/// problem of that file alone.
pub fn scan(dir: &str) -> Result<Outcome, String> {
    let cannot_read = |e: std::io::Error| format!("config.dir: cannot read {dir}: {e}");
    let mut files: Vec<(String, Format, String)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot_read)? {
        // An entry that fails means the listing is incomplete; going on
        // would drop the services of the files it missed.
        let entry = entry.map_err(cannot_read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(format) = Format::of_file_name(&name) else {
            continue;
        };
        // Directories are skipped ("old.json/"); anything else, symlinks
        // included, is read and fails there if it is not a file. When the
        // type is unknown, reading tells.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let origin = Path::new(dir).join(&name).to_string_lossy().into_owned();
        files.push((name, format, origin));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let inputs = files
        .into_iter()
        .map(|(_, format, origin)| {
            let content = read_text(&origin).map(|text| (format, text));
            Input { origin, content }
        })
        .collect();
    Ok(assemble(inputs))
}

/// Reads one file as UTF-8 text of at most [`MAX_FILE_BYTES`].
fn read_text(path: &str) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{path}: cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{path}: larger than {} MiB, not read",
            MAX_FILE_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        format!("{path}: not UTF-8 text (invalid byte at offset {offset})")
    })
}

/// Parses the files in the given order and puts them together.
///
/// A file that cannot be read, parsed or validated is one problem and adds
/// no service. A service ID that an earlier file already registers makes
/// the later file a problem as a whole: taking only its other services
/// would register part of a file, and the node keeps what the file had
/// before only when the file has a problem.
pub fn assemble(inputs: Vec<Input>) -> Outcome {
    let mut outcome = Outcome {
        files: inputs.len(),
        ..Outcome::default()
    };
    // Service ID -> the file that registers it.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for Input { origin, content } in inputs {
        let parsed = content.and_then(|(format, text)| definitions::parse(&origin, format, &text));
        let services = match parsed {
            Ok(services) => services,
            Err(message) => {
                outcome.problems.push(Problem { origin, message });
                continue;
            }
        };
        if let Some((service, owner)) = services
            .iter()
            .find_map(|s| owners.get(&s.id).map(|owner| (s, owner)))
        {
            let message = format!(
                "{origin}: service id {:?} is already defined in {owner}",
                service.id
            );
            outcome.problems.push(Problem { origin, message });
            continue;
        }
        for service in services {
            owners.insert(service.id.clone(), origin.clone());
            outcome.registrations.push(Registered {
                origin: origin.clone(),
                service,
            });
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("file-source-test-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn write(&self, name: &str, content: &[u8]) {
            std::fs::write(self.0.join(name), content).expect("write file");
        }

        fn path(&self) -> String {
            self.0.to_string_lossy().into_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn toml_input(origin: &str, text: &str) -> Input {
        Input {
            origin: origin.to_string(),
            content: Ok((Format::Toml, text.to_string())),
        }
    }

    fn ids(outcome: &Outcome) -> Vec<(&str, &str)> {
        outcome
            .registrations
            .iter()
            .map(|r| (r.origin.as_str(), r.service.id.as_str()))
            .collect()
    }

    #[test]
    fn duplicate_id_across_files() {
        let outcome = assemble(vec![
            toml_input("/d/a.toml", "[service]\nname = \"web\"\n"),
            toml_input(
                "/d/b.toml",
                "[[service]]\nname = \"db\"\n[[service]]\nname = \"web\"\n",
            ),
            toml_input("/d/c.toml", "[service]\nname = \"cache\"\n"),
        ]);
        assert_eq!(outcome.files, 3);
        // b.toml contributes nothing, not even "db"; a and c still apply.
        assert_eq!(
            ids(&outcome),
            vec![("/d/a.toml", "web"), ("/d/c.toml", "cache")]
        );
        assert_eq!(
            outcome.problems,
            vec![Problem {
                origin: "/d/b.toml".into(),
                message: "/d/b.toml: service id \"web\" is already defined in /d/a.toml".into(),
            }]
        );
    }

    #[test]
    fn broken_file_does_not_claim_ids() {
        let outcome = assemble(vec![
            toml_input("/d/a.toml", "[service]\nname = \"web\"\nport = \"x\"\n"),
            toml_input("/d/b.toml", "[service]\nname = \"web\"\n"),
            Input {
                origin: "/d/c.json".into(),
                content: Err("/d/c.json: cannot read: permission denied".into()),
            },
        ]);
        assert_eq!(ids(&outcome), vec![("/d/b.toml", "web")]);
        let origins: Vec<&str> = outcome.problems.iter().map(|p| p.origin.as_str()).collect();
        assert_eq!(origins, vec!["/d/a.toml", "/d/c.json"]);
        assert_eq!(
            outcome.problems[0].message,
            "/d/a.toml: line 3: service.port: invalid type: string \"x\", expected u16"
        );
    }

    #[test]
    fn scans_a_directory_in_name_order() {
        let dir = TempDir::new("scan");
        dir.write(
            "20-db.json",
            br#"{"service": {"name": "db", "port": 5432}}"#,
        );
        dir.write(
            "10-web.toml",
            b"[[service]]\nname = \"web\"\n[[service]]\nname = \"api\"\n",
        );
        dir.write("30-broken.toml", b"[service]\nname = \"x\"\nport = 70000\n");
        dir.write("40-empty.toml", b"");
        dir.write("50-latin1.json", b"{\"service\": {\"name\": \"caf\xe9\"}}");
        dir.write(".10-web.toml.swp", b"garbage");
        dir.write("notes.txt", b"garbage");
        std::fs::create_dir(dir.0.join("old.toml")).expect("create subdir");
        dir.write("old.toml/x.toml", b"[service]\nname = \"nested\"\n");

        let outcome = scan(&dir.path()).expect("scan");
        let base = dir.path();
        let web = format!("{base}/10-web.toml");
        let db = format!("{base}/20-db.json");
        assert_eq!(outcome.files, 5);
        assert_eq!(
            ids(&outcome),
            vec![
                (web.as_str(), "web"),
                (web.as_str(), "api"),
                (db.as_str(), "db")
            ]
        );
        let broken = format!("{base}/30-broken.toml");
        let empty = format!("{base}/40-empty.toml");
        let latin1 = format!("{base}/50-latin1.json");
        assert_eq!(
            outcome.problems,
            vec![
                Problem {
                    origin: broken.clone(),
                    message: format!(
                        "{broken}: line 3: service.port: invalid value: integer `70000`, expected u16"
                    ),
                },
                Problem {
                    origin: empty.clone(),
                    message: format!("{empty}: the file is empty (still being written?); its services stay until it has content or is deleted"),
                },
                Problem {
                    origin: latin1.clone(),
                    message: format!("{latin1}: not UTF-8 text (invalid byte at offset 25)"),
                },
            ]
        );
    }

    #[test]
    fn oversized_file_is_a_problem() {
        let dir = TempDir::new("big");
        let mut text = b"[service]\nname = \"big\"\n".to_vec();
        text.resize(MAX_FILE_BYTES as usize + 1, b'\n');
        dir.write("big.toml", &text);
        let outcome = scan(&dir.path()).expect("scan");
        assert!(outcome.registrations.is_empty());
        assert_eq!(outcome.problems.len(), 1);
        assert!(outcome.problems[0]
            .message
            .ends_with("larger than 4 MiB, not read"));
    }

    #[test]
    fn unreadable_dir_is_an_error() {
        let e = scan("/nonexistent/muster/services.d").expect_err("missing dir");
        assert!(
            e.starts_with("config.dir: cannot read /nonexistent/muster/services.d: "),
            "{e}"
        );
    }
}
