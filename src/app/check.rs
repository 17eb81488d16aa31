//! `-t`: check a config and exit, like `nginx -t`. `ok` on stdout and exit 0, or the
//! `file:line: error` on stderr and exit 1. Warnings (a cluster key others can read, or one
//! too short to be a real key) go to stderr and still leave the config ok.

use crate::config::{self, CacConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

/// A key shorter than this is more likely a placeholder than random bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Prints the verdict on a loaded config (`Err` is the config's own `file:line` error) and
/// returns the exit code.
pub fn report(tool: &str, checked: Result<Vec<String>, String>) -> ExitCode {
    match checked {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("{tool}: warning: {w}");
            }
            super::announce("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(super::outcome::exit::USAGE)
        }
    }
}

/// `wugui-cac -t`: the config (which reads every class's secret files and checks every dest),
/// then warnings about the keys.
pub fn cac(path: &Path) -> Result<Vec<String>, String> {
    let c: CacConfig = config::load_cac(path).map_err(|e| e.to_string())?;
    let mut w = key_warnings("secret_file", &c.secret_file, c.secret.len());
    for k in &c.classes {
        if let (Some(p), Some(s)) = (&k.master_secret_file, &k.master_secret) {
            w.extend(key_warnings(&format!("[class {}] master_secret_file", k.cfg.name), p, s.len()));
        }
    }
    let dests: Vec<(&str, &str)> = c.classes.iter().map(|k| (k.cfg.name.as_str(), k.cfg.dest.as_str())).collect();
    w.extend(nested_dests(&dests));
    Ok(w)
}

/// A warning for each class whose dest lies inside another class's dest (`(name, dest)`
/// pairs): supported, but each class's pushes are then bounded by the other's.
fn nested_dests(classes: &[(&str, &str)]) -> Vec<String> {
    let mut w = Vec::new();
    for (outer, od) in classes {
        for (inner, id) in classes {
            let (o, i) = (Path::new(od), Path::new(id));
            if i.starts_with(o) && i != o {
                w.push(format!(
                    "[class {inner}] dest {id} lies inside [class {outer}]'s dest {od}: a push of {outer} that puts a non-directory there fails on every po that has a copy of {inner}'s dest, and {outer}'s mirror leaves it alone"
                ));
            }
        }
    }
    w
}

/// `wugui-po -t`: the config, that `state_dir` is a directory if it exists, and a warning when
/// others could write in it.
pub fn po(path: &Path) -> Result<Vec<String>, String> {
    let c = config::load_po(path).map_err(|e| e.to_string())?;
    not_a_dir(&c.state_dir, "state_dir")?;
    Ok(crate::store::state_file::unsafe_dir(&c.state_dir).into_iter().collect())
}

/// `masterwugui -t`: the config, and that `secret_dir` is a directory if it exists.
pub fn master(path: &Path) -> Result<Vec<String>, String> {
    let c = config::load_master(path).map_err(|e| e.to_string())?;
    if let Some(d) = &c.secret_dir {
        not_a_dir(d, "secret_dir")?;
    }
    Ok(Vec::new())
}

fn not_a_dir(p: &Path, key: &str) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if !m.is_dir() => Err(format!("{key} {} is not a directory", p.display())),
        _ => Ok(()),
    }
}

/// What is wrong with a key file that is still usable.
fn key_warnings(what: &str, path: &Path, len: usize) -> Vec<String> {
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
    weak_key(mode, len).into_iter().map(|m| format!("{what} {}: {m}", path.display())).collect()
}

/// The warnings for a key file of `mode` holding `len` bytes.
fn weak_key(mode: u32, len: usize) -> Vec<String> {
    let mut w = Vec::new();
    if mode & 0o004 != 0 {
        w.push(format!("is world-readable (mode {:o}; chmod 600 it)", mode & 0o777));
    }
    if len < MIN_KEY_BYTES {
        w.push(format!(
            "holds {len} bytes, fewer than {MIN_KEY_BYTES} (head -c 32 /dev/urandom | base64 > FILE makes a good one)"
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::{nested_dests, weak_key};

    #[test]
    fn nested_dests_are_named() {
        let w = nested_dests(&[("a", "/data/a"), ("b", "/data/a/sub/b"), ("c", "/data/ab"), ("d", "/data/a/")]);
        // b is inside a (and inside d, the same dest as a); a and d are not nested
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("[class b] dest /data/a/sub/b lies inside [class a]'s dest /data/a"), "{w:?}");
        assert!(nested_dests(&[("a", "/data/a"), ("b", "/data/b")]).is_empty());
    }

    #[test]
    fn weak_keys_are_named() {
        assert!(weak_key(0o600, 44).is_empty());
        let w = weak_key(0o644, 6);
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("world-readable (mode 644"), "{w:?}");
        assert!(w[1].contains("6 bytes"), "{w:?}");
        assert_eq!(weak_key(0o640, 31).len(), 1);
    }
}
