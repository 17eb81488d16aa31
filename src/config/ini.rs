//! The INI reader: a file into sections of `key = value` entries, and the errors that name
//! `file:line`. Which sections and keys mean something is up to each role.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;

pub(super) struct Entry {
    key: String,
    value: String,
    line: usize,
}

pub(super) struct Section {
    /// `cac`, `po`, `master`, `class`, or whatever the file says (checked against the role's list).
    pub kind: String,
    /// The name in `[class NAME]`.
    pub arg: Option<String>,
    pub line: usize,
    entries: Vec<Entry>,
}

/// Read the config file at `path` and hand it to a role's `parse`, with the file's directory as
/// the base of relative paths.
pub(super) fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str, &str, &Path) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(&file, 0, format!("cannot read config: {e}")))?;
    parse(&text, &file, &base_dir_of(path))
}

fn base_dir_of(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if parent.is_absolute() {
        parent
    } else {
        std::env::current_dir().map(|d| d.join(&parent)).unwrap_or(parent)
    }
}

/// Split the text into sections, refusing a section whose kind is not in `allowed`;
/// `allowed[0]` is the role the file configures.
pub(super) fn read_ini(text: &str, file: &str, allowed: &[&str]) -> Result<Vec<Section>, ConfigError> {
    let sections = split_sections(text, file)?;
    for s in &sections {
        if !allowed.contains(&s.kind.as_str()) {
            let has = allowed
                .iter()
                .map(|k| if *k == "class" { "[class NAME]".to_owned() } else { format!("[{k}]") })
                .collect::<Vec<_>>()
                .join(" and ");
            let msg = format!("unknown section {} (a {} config has {has})", s.title(), allowed[0]);
            return Err(ConfigError::new(file, s.line, msg));
        }
    }
    Ok(sections)
}

/// The syntax alone: headers, `key = value` lines, comments and blank lines.
fn split_sections(text: &str, file: &str) -> Result<Vec<Section>, ConfigError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(inner) = rest.strip_suffix(']') else {
                return Err(ConfigError::new(file, line, format!("bad section header {t:?} (expected [name])")));
            };
            let mut words = inner.split_whitespace();
            let Some(kind) = words.next() else {
                return Err(ConfigError::new(file, line, "empty section header []"));
            };
            let arg = words.next().map(str::to_owned);
            if words.next().is_some() {
                return Err(ConfigError::new(file, line, format!("bad section header {t:?}")));
            }
            sections.push(Section { kind: kind.to_owned(), arg, line, entries: Vec::new() });
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(ConfigError::new(file, line, format!("expected `key = value`, not {t:?}")));
        };
        let key = k.trim();
        if key.is_empty() {
            return Err(ConfigError::new(file, line, "missing key before `=`"));
        }
        let Some(sec) = sections.last_mut() else {
            return Err(ConfigError::new(file, line, format!("key {key:?} outside any section")));
        };
        sec.entries.push(Entry { key: key.to_owned(), value: v.trim().to_owned(), line });
    }
    Ok(sections)
}

/// A file whose only section is one `[kind]` (po.conf, master.conf).
pub(super) fn read_single(text: &str, file: &str, kind: &str) -> Result<Section, ConfigError> {
    let mut sections = read_ini(text, file, &[kind])?;
    only_section(&sections, file, kind)?;
    // Every section is a `[kind]` and there is exactly one of them.
    Ok(sections.swap_remove(0))
}

/// The single `[kind]` section with no argument, refusing duplicates and arguments.
pub(super) fn only_section<'a>(sections: &'a [Section], file: &str, kind: &str) -> Result<&'a Section, ConfigError> {
    let mut found: Option<&Section> = None;
    for s in sections.iter().filter(|s| s.kind == kind) {
        if s.arg.is_some() {
            return Err(ConfigError::new(file, s.line, format!("section [{kind}] takes no name")));
        }
        if found.is_some() {
            return Err(ConfigError::new(file, s.line, format!("duplicate section [{kind}]")));
        }
        found = Some(s);
    }
    found.ok_or_else(|| ConfigError::new(file, 0, format!("no [{kind}] section")))
}

/// The keys a section has set.
pub(super) struct Seen {
    keys: HashSet<String>,
}

impl Seen {
    pub fn has(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

impl Section {
    /// Hand each entry, in file order, to `f`, after refusing a key set twice (except those in
    /// `repeatable`).
    pub fn read_keys<'a>(
        &'a self,
        file: &'a str,
        repeatable: &[&str],
        mut f: impl FnMut(Key<'a>) -> Result<(), ConfigError>,
    ) -> Result<Seen, ConfigError> {
        let mut seen = Seen { keys: HashSet::new() };
        for entry in &self.entries {
            if !repeatable.contains(&entry.key.as_str()) && !seen.keys.insert(entry.key.clone()) {
                return Err(ConfigError::new(file, entry.line, format!("duplicate key {:?}", entry.key)));
            }
            f(Key { file, entry, section: self })?;
        }
        Ok(seen)
    }

    /// `[kind]` or `[kind NAME]`, as the file has it.
    pub fn title(&self) -> String {
        match &self.arg {
            Some(a) => format!("[{} {}]", self.kind, a),
            None => format!("[{}]", self.kind),
        }
    }

    /// An error at the section header.
    pub fn error(&self, file: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(file, self.line, msg)
    }

    pub fn missing(&self, file: &str, key: &str) -> ConfigError {
        self.error(file, format!("{} lacks the required key {key:?}", self.title()))
    }
}

/// One `key = value` line, with what an error about it needs.
#[derive(Clone, Copy)]
pub(super) struct Key<'a> {
    file: &'a str,
    entry: &'a Entry,
    section: &'a Section,
}

impl<'a> Key<'a> {
    pub fn name(&self) -> &'a str {
        &self.entry.key
    }

    pub fn value(&self) -> &'a str {
        &self.entry.value
    }

    pub fn line(&self) -> usize {
        self.entry.line
    }

    /// An error at this line, prefixed with the key.
    pub fn bad(&self, msg: impl fmt::Display) -> ConfigError {
        ConfigError::new(self.file, self.entry.line, format!("{}: {}", self.entry.key, msg))
    }

    pub fn unknown(&self) -> ConfigError {
        let msg = format!("unknown key {:?} in {}", self.entry.key, self.section.title());
        ConfigError::new(self.file, self.entry.line, msg)
    }
}

/// Places a value parser's error at its key: `parse_addr(v, true).at(k)?`.
pub(super) trait At<T> {
    fn at(self, k: Key<'_>) -> Result<T, ConfigError>;
}

impl<T, M: fmt::Display> At<T> for Result<T, M> {
    fn at(self, k: Key<'_>) -> Result<T, ConfigError> {
        self.map_err(|m| k.bad(m))
    }
}
