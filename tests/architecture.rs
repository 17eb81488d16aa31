//! The layering rules, checked on the text of `src/`:
//! - `src/proto/` is the pure core (with `PURE`'s parts of `src/dns/`): it names no other layer (`crate::` only as `crate::proto`,
//!   or `crate::testutil` in tests) and reaches for no files, sockets, clocks, randomness,
//!   processes, environment or per-thread state. Address values come from `core::net`.
//! - Each lower layer names only the layers below it (`LAYERS`: the system-call module names
//!   none, so no protocol type reaches a system call).
//! - `unsafe` lives only in the system-call module (`src/sys/`, once `src/sendfile/`).
//!
//! Comments and the insides of string literals do not count.

use std::path::{Path, PathBuf};

/// `std::` modules the core may not use, and why.
const STD_BANNED: [(&str, &str); 4] = [
    ("fs", "no files in the pure core"),
    ("net", "no sockets in the pure core (address values: core::net)"),
    ("process", "no processes in the pure core"),
    ("env", "no environment in the pure core"),
];
/// Other names the core may not use, and why.
const NAMES_BANNED: [(&str, &str); 3] = [
    ("SystemTime::now", "no clock in the pure core: time is passed in"),
    ("getrandom", "no randomness source in the pure core: Env brings it"),
    ("thread_local!", "no per-thread state in the pure core"),
];
/// Where `crate::` may lead from each layer (README, "Architecture"); a layer not listed (the
/// app and the binaries) may use any. `testutil` is the unit tests' helpers.
const LAYERS: [(&str, &[&str]); 7] = [
    ("src/proto/", &["proto", "testutil"]),
    ("src/sys/", &["sys", "testutil"]),
    ("src/work.rs", &["work", "testutil"]),
    ("src/dns/", &["dns", "testutil"]),
    ("src/store/", &["store", "proto", "sys", "work", "logging", "tree", "testutil"]),
    ("src/tree.rs", &["tree", "store", "proto", "sys", "work", "logging", "testutil"]),
    ("src/reactor/", &["reactor", "proto", "sys", "work", "logging", "metrics", "testutil"]),
];
/// What the purity rules cover: the core, and the pure parts of the resolver (the DNS codec, the
/// resolver-file and hosts-file parsers); `src/dns/resolve` is their I/O.
const PURE: [&str; 4] = ["src/proto/", "src/dns/msg", "src/dns/resolv_conf.rs", "src/dns/hosts.rs"];
/// The system-call module, by its old and its new name.
const UNSAFE_HOMES: [&str; 2] = ["src/sys/", "src/sendfile/"];

#[test]
fn the_core_is_pure_and_unsafe_stays_in_the_system_call_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for file in rust_files(&root.join("src")) {
        let rel = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap();
        broken.extend(check(&rel, &text));
    }
    assert!(broken.is_empty(), "{} layering rules broken:\n{}", broken.len(), broken.join("\n"));
}

#[test]
fn the_checker_sees_each_rule_and_skips_comments_and_strings() {
    let core = "use std::fs::File;\nuse std::{io, net::TcpStream};\nlet t = SystemTime::now();\n\
                getrandom::getrandom(&mut b);\nthread_local! { }\ncrate::metrics::X.inc();\n\
                use crate::{proto::Msg, stage};\nuse crate::proto::Sum;\nuse core::net::SocketAddr;\n\
                // std::fs in a comment\nlet s = \"std::env in a string\";\n/* unsafe\n std::process */\n\
                let c = '\"'; let r = r#\"crate::app\"#; fn f<'a>(x: &'a u8) {}\nunsafe { }\n";
    let got = check("src/proto/x.rs", core);
    let lines: Vec<&str> = got.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "src/proto/x.rs:1:",
            "src/proto/x.rs:2:",
            "src/proto/x.rs:3:",
            "src/proto/x.rs:4:",
            "src/proto/x.rs:5:",
            "src/proto/x.rs:6:",
            "src/proto/x.rs:7:",
            "src/proto/x.rs:15:"
        ],
        "{got:#?}"
    );
    assert!(check("src/sendfile/mod.rs", "unsafe { f() }\n#![deny(unsafe_code)]").is_empty());
    assert!(check("src/sys/fd.rs", "unsafe fn f() {}").is_empty());
    assert!(check("src/stage.rs", "use std::fs;\nuse crate::metrics;\n#![deny(unsafe_code)]\n").is_empty());
    assert_eq!(check("src/stage.rs", "let f = unsafe { g() };").len(), 1);
    assert_eq!(check("src/sys/fd.rs", "use crate::proto::Sum;\nuse crate::sys::fd;").len(), 1);
    assert_eq!(check("src/reactor/conn.rs", "use crate::app::x;\nuse crate::proto::Msg;").len(), 1);
    assert_eq!(check("src/dns/msg.rs", "use std::net::IpAddr;\nuse crate::config::x;").len(), 2);
    assert!(check("src/dns/resolve.rs", "use std::net::UdpSocket;\ngetrandom::getrandom(&mut b);").is_empty());
}

/// Every broken rule in one file, as `path:line: what (rule)`.
fn check(rel: &str, text: &str) -> Vec<String> {
    let code = strip_comments_and_strings(text);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    if let Some((layer, allowed)) = LAYERS.iter().find(|(l, _)| rel.starts_with(l)) {
        for (at, first) in path_heads(&code, "crate::") {
            if !allowed.contains(&first.as_str()) {
                out.push((at, format!("`crate::{first}`: {layer} may use only {}", allowed.join(", "))));
            }
        }
    }
    if PURE.iter().any(|p| rel.starts_with(p)) {
        for (at, first) in path_heads(&code, "std::") {
            if let Some((_, why)) = STD_BANNED.iter().find(|(m, _)| *m == first) {
                out.push((at, format!("`std::{first}`: {why}")));
            }
        }
        for (name, why) in NAMES_BANNED {
            for at in word_hits(&code, name) {
                out.push((at, format!("`{name}`: {why}")));
            }
        }
    }
    if !UNSAFE_HOMES.iter().any(|h| rel.starts_with(h)) {
        for at in word_hits(&code, "unsafe") {
            out.push((at, "`unsafe`: only the system-call module (src/sys/) has unsafe code".to_string()));
        }
    }
    let mut lines: Vec<(usize, String)> = out.into_iter().map(|(at, what)| (line_of(at), what)).collect();
    lines.sort();
    lines.dedup();
    lines.into_iter().map(|(line, what)| format!("{rel}:{line}: {what}")).collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where `word` stands alone in `code` (no identifier character just before or after).
fn word_hits(code: &str, word: &str) -> Vec<usize> {
    code.match_indices(word)
        .filter(|(at, _)| {
            let before = code[..*at].chars().next_back();
            let after = code[at + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
        .map(|(at, _)| at)
        .collect()
}

/// For each path that starts with `prefix` (`std::`, `crate::`), its next segment; for a
/// group (`std::{fs, io::Read}`), each member's first segment.
fn path_heads(code: &str, prefix: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| s.trim_start().chars().take_while(|c| is_ident(*c)).collect::<String>();
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue; // `core::net::std::` does not occur; `mystd::` is another name
        }
        let rest = code[at + prefix.len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push((at, ident(&group[start..i])));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push((at, ident(&group[start..i])));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((at, ident(rest)));
        }
    }
    out.retain(|(_, h)| !h.is_empty());
    out
}

/// `text` with comments removed and string and char literals emptied; newlines are kept, so
/// byte offsets still give the right line.
fn strip_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep_newlines = |out: &mut String, s: &[char]| s.iter().filter(|c| **c == '\n').for_each(|_| out.push('\n'));
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let (start, mut depth) = (i, 0);
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            keep_newlines(&mut out, &c[start..i.min(c.len())]);
        } else if c[i] == 'r' && !prev_ident && matches!(c.get(i + 1), Some('#') | Some('"')) {
            // A raw string r#"..."#, or the identifier `r` followed by something else.
            let hashes = c[i + 1..].iter().take_while(|c| **c == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let start = i;
            i += hashes + 2;
            while i < c.len()
                && !(c[i] == '"' && c[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes)
            {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
            keep_newlines(&mut out, &c[start..i.min(c.len())]);
        } else if c[i] == '"' {
            let start = i;
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
            keep_newlines(&mut out, &c[start..i.min(c.len())]);
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal; a lifetime ('a) has no closing quote two places on.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}
