//! `masterwugui --exclude-glob PATTERN`: a shell glob, turned into the exclude regex it means
//! (the walk knows only regexes; see `tree`).
//!
//! The glob is matched against the whole path relative to `-p`, as rsync and .gitignore do:
//! - `*` is any run of characters but `/`, `?` one character but `/`, `[abc]`, `[a-z]` and
//!   `[!abc]` one character of (or not of) the set;
//! - `**/` is any number of directories (none too), `/**` at the end everything below, and
//!   `**` elsewhere any run of characters, `/` included;
//! - a pattern with no `/` but a trailing one matches a name at any depth (`*.tmp` drops
//!   `a.tmp` and `x/y/a.tmp`); one with a `/` is anchored at `-p` (`logs/*.gz`);
//! - a trailing `/` matches directories only (`cache/`);
//! - `\` makes the next character literal.
//!
//! Names are bytes (`regex::bytes`): `*` and `?` also match a byte that is not part of
//! valid UTF-8, so `*.bin` drops `\xff\xfe.bin`.

/// One character of a name: a UTF-8 character but `/`, or any byte that is not valid UTF-8.
const NAME_CHAR: &str = r"(?:[^/]|(?-u:[\x80-\xff]))";
/// Any run of bytes, `/` and newlines included.
const ANY: &str = r"(?s-u:.)*";

/// The regex for `glob`, checked: a glob whose set the regex parser refuses (a reversed range
/// such as `[z-a]`) is an error that names the glob as the user wrote it.
pub fn checked_regex(glob: &str) -> Result<String, String> {
    let re = to_regex(glob);
    match regex::bytes::Regex::new(&re) {
        Ok(_) => Ok(re),
        Err(e) => {
            let why = e.to_string();
            let why = why.lines().last().unwrap_or_default().trim_start_matches("error: ").to_owned();
            Err(format!("bad --exclude-glob {glob:?}: {why}"))
        }
    }
}

/// The regex for `glob` (an unclosed `[` is a literal `[`).
pub fn to_regex(glob: &str) -> String {
    let (body, dir_only) = match glob.strip_suffix('/') {
        Some(b) if !b.is_empty() => (b, true),
        _ => (glob, false),
    };
    let anchored = body.contains('/');
    let body = body.strip_prefix('/').unwrap_or(body);
    let mut re = String::from(if anchored { "^" } else { "(^|/)" });
    let c: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '*' if c.get(i + 1) == Some(&'*') => {
                let starts_part = i == 0 || c[i - 1] == '/';
                if starts_part && c.get(i + 2) == Some(&'/') {
                    re += &format!("({ANY}/)?");
                    i += 3;
                    continue;
                }
                re += ANY;
                i += 2;
                continue;
            }
            '*' => re += &format!("{NAME_CHAR}*"),
            '?' => re += NAME_CHAR,
            '[' => match class(&c[i..]) {
                Some((set, len)) => {
                    re += &set;
                    i += len;
                    continue;
                }
                None => re += r"\[",
            },
            '\\' if i + 1 < c.len() => {
                i += 1;
                re += &regex::escape(&c[i].to_string());
            }
            ch => re += &regex::escape(&ch.to_string()),
        }
        i += 1;
    }
    re += if dir_only { "/$" } else { "$" };
    re
}

/// `[...]` at the start of `c`: the regex class and how many characters it took, or None if it
/// is not closed. A `]` first in the set is a member; a `-` between two members is a range.
fn class(c: &[char]) -> Option<(String, usize)> {
    let mut set = String::from("[");
    let mut i = 1;
    if matches!(c.get(1), Some('!' | '^')) {
        set.push('^');
        i += 1;
    }
    let first = i;
    let close = first + c.get(first..)?.iter().skip(1).position(|ch| *ch == ']')? + 1;
    for (j, ch) in c.iter().enumerate().take(close).skip(first) {
        if *ch == '-' && j != first && j + 1 != close {
            set.push('-');
        } else {
            set += &regex::escape(&ch.to_string());
        }
    }
    set.push(']');
    Some((set, close + 1))
}

#[cfg(test)]
mod tests {
    use super::{checked_regex, to_regex};

    #[test]
    fn a_glob_the_regex_parser_refuses_is_named_as_typed() {
        assert_eq!(checked_regex("*.tmp"), Ok(to_regex("*.tmp")));
        let e = checked_regex("[z-a]").unwrap_err();
        assert!(e.starts_with("bad --exclude-glob \"[z-a]\": "), "{e}");
    }

    fn matches(glob: &str, path: &str) -> bool {
        regex::bytes::Regex::new(&to_regex(glob)).unwrap().is_match(path.as_bytes())
    }

    #[test]
    fn globs_mean_what_the_shell_means() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.tmp", "a.tmp", true),
            ("*.tmp", "x/y/a.tmp", true),
            ("*.tmp", "a.tmp.gz", false),
            ("*.tmp", "atmp", false),
            ("a.txt", "data.txt", false),
            ("a.txt", "d/a.txt", true),
            ("logs/*.gz", "logs/1.gz", true),
            ("logs/*.gz", "logs/old/1.gz", false),
            ("logs/*.gz", "x/logs/1.gz", false),
            ("logs/**/*.gz", "logs/1.gz", true),
            ("logs/**/*.gz", "logs/a/b/1.gz", true),
            ("**/cache", "cache", true),
            ("**/cache", "a/b/cache", true),
            ("**/cache", "a/bcache", false),
            ("build/**", "build/", true),
            ("build/**", "build/x/y", true),
            ("build/**", "buildx/y", false),
            ("a**b", "a/x/b", true),
            ("cache/", "cache/", true),
            ("cache/", "cache", false),
            ("cache/", "x/cache/", true),
            ("?.log", "1.log", true),
            ("?.log", "12.log", false),
            ("[ab].c", "a.c", true),
            ("[!ab].c", "a.c", false),
            ("[!ab].c", "z.c", true),
            ("[a-c]", "b", true),
            ("[]x]", "]", true),
            ("[x", "[x", true),
            (r"\*", "*", true),
            (r"\*", "a", false),
            ("(a)+$.txt", "(a)+$.txt", true),
            ("/top", "top", true),
            ("/top", "a/top", false),
        ];
        let re = |g: &str| regex::bytes::Regex::new(&to_regex(g)).unwrap();
        assert!(re("*.bin").is_match(b"d/\xff\xfe.bin"), "* takes bytes that are not UTF-8");
        assert!(re("?.bin").is_match(b"\xff.bin") && re("?.bin").is_match("é.bin".as_bytes()));
        assert!(re("a/**").is_match(b"a/\xff/\n"));
        for (glob, path, want) in cases {
            assert_eq!(matches(glob, path), *want, "{glob} on {path}: {}", to_regex(glob));
        }
    }

    #[test]
    fn every_glob_compiles() {
        for g in ["[", "[]", "[!]", "\\", "**", "***", "a/**/", "[a-]", "[&&]", "[~~]", "[\\]", "[[:x:]]"] {
            assert!(regex::bytes::Regex::new(&to_regex(g)).is_ok(), "{g}: {}", to_regex(g));
        }
    }
}
