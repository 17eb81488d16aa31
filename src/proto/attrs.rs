//! What a po makes of a pushed entry's owner and mode: class keys `owner` and `chmod`.
//!
//! The mode a po gives an entry is the manifest's, then `mode & 0777` unless the class sets
//! `keep_special_bits = on`, then the class `chmod` on top. `chmod` takes rwxX only: the
//! setuid, setgid and sticky bits come from the tree with `keep_special_bits` or not at all.

use std::fmt;

/// Class `owner`: who owns what a po publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Owner {
    /// `root` (the default): the po's own user (root, as a po runs); nothing is chowned.
    #[default]
    Po,
    /// `keep`: the uid and gid the master's tree has, by number (rsync `-o -g`). A po that
    /// does not run as root cannot give files away and keeps them as its own.
    Keep,
    /// `USER:GROUP`: names a po looks up in its own `/etc/passwd` and `/etc/group` (static
    /// binaries have no NSS), or numbers (`1000:1000`).
    Named { user: String, group: String },
}

impl Owner {
    pub fn parse(v: &str) -> Result<Owner, String> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !s.starts_with('-')
        };
        match v {
            "root" => Ok(Owner::Po),
            "keep" => Ok(Owner::Keep),
            _ => match v.split_once(':') {
                Some((u, g)) if ok(u) && ok(g) => Ok(Owner::Named { user: u.into(), group: g.into() }),
                _ => Err(format!("owner must be keep, root or USER:GROUP (names or numbers), not {v:?}")),
            },
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Po => f.write_str("root"),
            Owner::Keep => f.write_str("keep"),
            Owner::Named { user, group } => write!(f, "{user}:{group}"),
        }
    }
}

/// One clause of a `chmod` (`Du+rwX`): which entries, whose bits, what change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clause {
    /// `Some(true)`: directories only (`D`), `Some(false)`: everything else (`F`).
    only_dirs: Option<bool>,
    /// The bits of the users named (u 0700, g 0070, o 0007).
    who: u32,
    op: u8,
    /// rwx as 0777 would have them for every user, before `who` masks them.
    perm: u32,
    /// `X`: execute, for directories and for files any user may execute already.
    cond_x: bool,
}

/// Class `chmod`: comma-separated clauses as chmod(1) and rsync `--chmod` write them,
/// `[D|F][ugoa]*[+-=][rwxX]*` (no users named: all). Applied in order after the special
/// bits rule (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chmod {
    clauses: Vec<Clause>,
}

/// A sane bound on a config value that every po parses.
const MAX_CLAUSES: usize = 32;

impl Chmod {
    pub fn parse(v: &str) -> Result<Chmod, String> {
        let bad = |why: &str| Err(format!("chmod {v:?}: {why} (write clauses like u+rwX,go-w or Dg+x,Fo-rwx)"));
        let mut clauses = Vec::new();
        if v.trim().is_empty() {
            return Ok(Chmod::default());
        }
        for c in v.split(',') {
            let c = c.trim();
            let mut b = c.bytes().peekable();
            let only_dirs = match b.peek() {
                Some(b'D') => Some(true),
                Some(b'F') => Some(false),
                _ => None,
            };
            if only_dirs.is_some() {
                b.next();
            }
            let mut who = 0;
            while let Some(&x) = b.peek() {
                who |= match x {
                    b'u' => 0o700,
                    b'g' => 0o070,
                    b'o' => 0o007,
                    b'a' => 0o777,
                    _ => break,
                };
                b.next();
            }
            if who == 0 {
                who = 0o777;
            }
            let op = match b.next() {
                Some(op @ (b'+' | b'-' | b'=')) => op,
                _ => return bad(&format!("clause {c:?} has no +, - or =")),
            };
            let (mut perm, mut cond_x) = (0, false);
            for x in b {
                match x {
                    b'r' => perm |= 0o444,
                    b'w' => perm |= 0o222,
                    b'x' => perm |= 0o111,
                    b'X' => cond_x = true,
                    b's' | b't' => {
                        return bad(
                            "setuid, setgid and sticky bits come only from the tree, with keep_special_bits = on",
                        )
                    }
                    _ => return bad(&format!("clause {c:?} has {:?}, not one of rwxX", x as char)),
                }
            }
            clauses.push(Clause { only_dirs, who, op, perm, cond_x });
            if clauses.len() > MAX_CLAUSES {
                return bad(&format!("more than {MAX_CLAUSES} clauses"));
            }
        }
        Ok(Chmod { clauses })
    }

    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// `mode` (permission bits) with every clause applied in order.
    pub fn apply(&self, mut mode: u32, is_dir: bool) -> u32 {
        for c in &self.clauses {
            if c.only_dirs.is_some_and(|d| d != is_dir) {
                continue;
            }
            let x = if c.cond_x && (is_dir || mode & 0o111 != 0) { 0o111 } else { 0 };
            let bits = (c.perm | x) & c.who;
            mode = match c.op {
                b'+' => mode | bits,
                b'-' => mode & !bits,
                _ => (mode & !c.who) | bits,
            };
        }
        mode
    }
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match c.only_dirs {
                Some(true) => f.write_str("D")?,
                Some(false) => f.write_str("F")?,
                None => {}
            }
            for (bits, name) in [(0o700, "u"), (0o070, "g"), (0o007, "o")] {
                if c.who & bits != 0 {
                    f.write_str(name)?;
                }
            }
            write!(f, "{}", c.op as char)?;
            for (bits, name) in [(0o444, "r"), (0o222, "w"), (0o111, "x")] {
                if c.perm & bits != 0 {
                    f.write_str(name)?;
                }
            }
            if c.cond_x {
                f.write_str("X")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_as_chmod_1_does() {
        let c = Chmod::parse("u+rwX,go-w").unwrap();
        assert_eq!(c.apply(0o666, false), 0o644);
        assert_eq!(c.apply(0o000, false), 0o600);
        assert_eq!(c.apply(0o010, false), 0o710, "X: a file someone may execute");
        assert_eq!(c.apply(0o000, true), 0o700, "X: a directory");
        let d = Chmod::parse("Du=rwx,Fa=r, o-rwx").unwrap();
        assert_eq!(d.apply(0o755, true), 0o750);
        assert_eq!(d.apply(0o755, false), 0o440);
        for c in [c, d] {
            assert_eq!(Chmod::parse(&c.to_string()).unwrap(), c, "{c}");
        }
        assert!(Chmod::parse("").unwrap().is_empty());
        for bad in ["u+s", "+t", "u", "q+r", "u+z", "u+r,", "Dx"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owners() {
        assert_eq!(Owner::parse("root").unwrap(), Owner::Po);
        assert_eq!(Owner::parse("keep").unwrap(), Owner::Keep);
        let n = Owner::parse("work:www-data").unwrap();
        assert_eq!(n.to_string(), "work:www-data");
        assert_eq!(Owner::parse("1000:1000").unwrap().to_string(), "1000:1000");
        for bad in ["", "work", ":g", "u:", "a b:c", "u:g:h", "-u:g", "u/x:g"] {
            assert!(Owner::parse(bad).is_err(), "{bad}");
        }
    }
}
