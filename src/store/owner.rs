//! Class `owner` on this po: the uid and gid each published entry gets.
//!
//! Static binaries have no NSS, so `USER:GROUP` names are looked up in `/etc/passwd` and
//! `/etc/group` directly (files only: users that live in LDAP or another NSS source need
//! numbers, `1000:1000`, which are taken as they are).

use crate::proto::attrs::Owner;

/// How an entry's owner is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// The po's own user: nothing is chowned.
    Own,
    /// The manifest's uid and gid (the po runs as root).
    Keep,
    /// One uid and gid for every entry.
    Fixed(u32, u32),
}

/// `owner` resolved on this host, or why it cannot be.
pub fn resolve(o: &Owner) -> Result<Ids, String> {
    match o {
        Owner::Po => Ok(Ids::Own),
        // As rsync -o -g: only root can give files away; anyone else keeps them.
        Owner::Keep if nix::unistd::geteuid().is_root() => Ok(Ids::Keep),
        Owner::Keep => Ok(Ids::Own),
        Owner::Named { user, group } => {
            Ok(Ids::Fixed(id_of(user, "/etc/passwd", "user")?, id_of(group, "/etc/group", "group")?))
        }
    }
}

fn id_of(name: &str, file: &str, what: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("owner: cannot read {file} for {what} {name:?}: {e}"))?;
    lookup(&text, name).ok_or_else(|| format!("owner: no {what} {name:?} in {file}"))
}

/// The id of `name` in text of the passwd or group format (`name:x:ID:...`).
fn lookup(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_files_numbers_as_they_are() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nwork:x:1000:1000::/home/work:/bin/sh\nbad:x:zz:1\n";
        assert_eq!(lookup(passwd, "work"), Some(1000));
        assert_eq!(lookup(passwd, "root"), Some(0));
        assert_eq!(lookup(passwd, "bad"), None);
        assert_eq!(lookup(passwd, "wor"), None);
        assert_eq!(resolve(&Owner::parse("123:456").unwrap()), Ok(Ids::Fixed(123, 456)));
        assert_eq!(resolve(&Owner::Po), Ok(Ids::Own));
        assert_eq!(resolve(&Owner::parse("root:root").unwrap()), Ok(Ids::Fixed(0, 0)));
        let err = resolve(&Owner::parse("no-such-user-wugui:0").unwrap()).unwrap_err();
        assert!(err.contains("no user \"no-such-user-wugui\" in /etc/passwd"), "{err}");
    }
}
