//! `config::parse_cac`, `parse_po` and `parse_master` on arbitrary (lossy UTF-8) text.
//!
//! Byte 0 picks the parser; the rest is the file. Relative paths resolve against a fixture
//! directory holding a readable secret, an empty one, and po files, so the fuzzer can get past
//! `secret_file` into the class sections.
//!
//! Properties: no panic; parsing is deterministic; an error about the file itself names a line
//! that exists (or 0); errors and configs format. With WUGUI_FUZZ_STRICT=1, every class of a
//! parsed cac config also round-trips through `ClassCfg::to_pairs`/`from_pairs` (what the cac
//! sends to masters and pos).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wugui::config::{parse_cac, parse_master, parse_po, ConfigError};
use wugui::proto::class::ClassCfg;

const FILE: &str = "fuzz.conf";

fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Per process, so that parallel jobs never see a half-written file; scripts/fuzz.sh points
        // TMPDIR into fuzz/target/ and removes it afterwards.
        let d = std::env::temp_dir().join(format!("wugui-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the fixture directory");
        for (name, text) in [
            ("cluster.key", "s3cret\n"),
            ("base1.secret", "m\r\n"),
            ("empty.secret", "\n"),
            ("pos.txt", "# the pos\n10.0.0.2:7200\n\n  [::1]:7201\n"),
            ("bad.txt", "10.0.0.2:7200\nnot an address\n"),
        ] {
            std::fs::write(d.join(name), text).expect("write a fixture file");
        }
        d
    })
}

/// Paths that could block or never end when read (`/dev/zero`, `/dev/stdin`, `/proc/...`, a
/// FIFO under `/run`): the parsers read whatever file a config names, which is fine for an
/// admin's config but not for an in-process fuzzer.
fn could_hang(text: &str) -> bool {
    ["dev", "proc", "sys", "run"].iter().any(|w| text.contains(w))
}

fn check_err(e: &ConfigError, text: &str) {
    let _ = e.to_string();
    if e.file == FILE {
        let lines = text.lines().count();
        assert!(e.line <= lines, "error {e} names line {} of a {lines}-line file", e.line);
    }
}

fn check<T: PartialEq + std::fmt::Debug>(text: &str, parse: impl Fn() -> Result<T, ConfigError>) -> Option<T> {
    let r = parse();
    assert_eq!(r, parse(), "parsing is not deterministic");
    let _ = format!("{r:?}");
    match r {
        Ok(c) => Some(c),
        Err(e) => {
            check_err(&e, text);
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    if could_hang(&text) {
        return;
    }
    let dir = fixture_dir();
    match which % 3 {
        0 => {
            let Some(c) = check(&text, || parse_cac(&text, FILE, dir)) else { return };
            for k in &c.classes {
                assert!(!k.pos.is_empty());
                assert!(k.cfg.dest.starts_with('/'));
                if common::strict() {
                    let back = ClassCfg::from_pairs(&k.cfg.name, &k.cfg.to_pairs());
                    assert_eq!(back.as_ref(), Ok(&k.cfg), "class {:?} does not round-trip", k.cfg.name);
                }
            }
        }
        1 => {
            check(&text, || parse_po(&text, FILE, dir));
        }
        _ => {
            check(&text, || parse_master(&text, FILE, dir));
        }
    }
});
