//! Parsers of single values. Their errors lack the location; `ini::At` adds it.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use super::addr::resolve;
use super::Cidr;

pub(super) fn parse_addr(v: &str, allow_port0: bool) -> Result<SocketAddr, String> {
    if v.is_empty() {
        return Err("expected host:port, got nothing".into());
    }
    let a = resolve(v)?;
    if !allow_port0 && a.port() == 0 {
        return Err(format!("port 0 in {v:?} (only a listen address may use port 0)"));
    }
    Ok(a)
}

/// A comma-separated, non-empty list of addresses without repeats.
pub(super) fn parse_addr_list(v: &str) -> Result<Vec<SocketAddr>, String> {
    Ok(parse_addr_entries(v)?.into_iter().map(|(_, a)| a).collect())
}

/// `parse_addr_list`, with each entry as written (`host:port`), so a name can be asked again.
pub(super) fn parse_addr_entries(v: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut out: Vec<(String, SocketAddr)> = Vec::new();
    for item in v.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err("empty entry in the address list".into());
        }
        let a = parse_addr(item, false)?;
        if out.iter().any(|(_, b)| *b == a) {
            return Err(format!("{a} is listed twice"));
        }
        out.push((item.to_owned(), a));
    }
    Ok(out)
}

pub(super) fn parse_cidr_list(v: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for item in v.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err("empty entry in the list".into());
        }
        out.push(Cidr::parse(item)?);
    }
    Ok(out)
}

/// A path; relative ones are taken below `base`.
pub(super) fn parse_path(v: &str, base: &Path) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("expected a path, got nothing".into());
    }
    if v.contains('\0') {
        return Err("path contains NUL".into());
    }
    let p = Path::new(v);
    Ok(if p.is_absolute() { p.to_path_buf() } else { base.join(p) })
}

/// An absolute path without `..`, trailing slashes removed.
pub(super) fn parse_abs_path(v: &str) -> Result<PathBuf, String> {
    let p = Path::new(v);
    if !p.is_absolute() {
        return Err(format!("must be an absolute path, not {v:?}"));
    }
    if p.components().any(|c| c == Component::ParentDir) || v.contains('\0') {
        return Err(format!("must not contain `..`: {v:?}"));
    }
    Ok(p.components().collect())
}

pub(super) fn parse_seconds_ms(v: &str) -> Result<u64, String> {
    let s: f64 = v.parse().map_err(|_| format!("expected seconds like 3 or 0.5, not {v:?}"))?;
    if !s.is_finite() || s <= 0.0 || s > 3600.0 {
        return Err(format!("{v} seconds is outside (0, 3600]"));
    }
    Ok(((s * 1000.0).round() as u64).max(1))
}

/// Read a secret: the whole file less trailing newlines, refusing an empty one.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut s = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while matches!(s.last(), Some(b'\n' | b'\r')) {
        s.pop();
    }
    if s.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(s)
}
