//! What `masterwugui` says when its transfer ends: the exit code (README, `-h`), the
//! `transfer_end` log line, one stderr line per failed po or hook, and the summary line, last on
//! stdout.

use crate::logging::{kv_quote, printable};
use crate::proto::class::Publish;
use crate::proto::master::{DryRun, Outcome, PoOutcome, TransferResult};
use crate::proto::msg::PreviewKind;

/// Exit codes of `masterwugui`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const USAGE: u8 = 1;
    pub const DENIED: u8 = 2;
    pub const PARTIAL: u8 = 3;
    pub const FAILED: u8 = 4;
    pub const HOOK: u8 = 5;
    pub const ABORTED: u8 = 6;
    pub const CANARY_FAILED: u8 = 7;
    pub const SKIPPED: u8 = 8;
}

/// The one table of exit codes: `masterwugui -h` prints it and the README must list the same
/// rows (a test checks), in code order.
pub const CODES: [(u8, &str); 9] = [
    (exit::OK, "every po committed (or its tree was unchanged) and every hook succeeded"),
    (exit::USAGE, "usage, config or source error"),
    (exit::DENIED, "no CAC reachable, unknown class, refused, or another push of the class is running"),
    (exit::PARTIAL, "some pos committed and some failed"),
    (exit::FAILED, "no po committed, or the transfer timed out"),
    (exit::HOOK, "every po committed but a hook failed"),
    (exit::ABORTED, "aborted by SIGINT or SIGTERM"),
    (exit::CANARY_FAILED, "a canary po failed (publish or hook): the canaries rolled back, no other po published"),
    (exit::SKIPPED, "every po committed but some source files were skipped"),
];

/// The first code that applies wins, in this order.
pub const PRECEDENCE: [u8; 9] = [
    exit::USAGE,
    exit::DENIED,
    exit::ABORTED,
    exit::FAILED,
    exit::CANARY_FAILED,
    exit::PARTIAL,
    exit::HOOK,
    exit::SKIPPED,
    exit::OK,
];

/// The `result=` words of the summary line.
pub const RESULTS: &str = "ok|partial|failed|denied|aborted|canary_failed|dry-run";

/// The exit-code part of `masterwugui -h`.
pub fn help() -> String {
    let order: Vec<String> = PRECEDENCE.iter().map(u8::to_string).collect();
    let mut s = format!("Exit codes (the first that applies, in the order {}):\n", order.join(", "));
    for (code, meaning) in CODES {
        s += &format!("  {code}  {meaning}\n");
    }
    s
}

/// The lines to print and the code to exit with.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub code: u8,
    pub stderr: Vec<String>,
    /// The summary is the last line.
    pub stdout: Vec<String>,
}

fn hook_failed(p: &PoOutcome) -> bool {
    p.hook.as_ref().is_some_and(|(exit, _)| *exit != 0)
}

/// Every code that applies to `r`; `code` picks the first by `PRECEDENCE`.
fn applies(r: &TransferResult) -> Vec<u8> {
    match r {
        TransferResult::SourceFailed(_) => vec![exit::USAGE],
        TransferResult::Denied(_) => vec![exit::DENIED],
        // A dry run fails as the real push would: some pos (3), or all (4).
        TransferResult::DryRun(d) => match d.answers.iter().filter(|(_, a)| a.is_err()).count() {
            0 => vec![exit::OK],
            n if n < d.answers.len() => vec![exit::PARTIAL],
            _ => vec![exit::FAILED],
        },
        TransferResult::Aborted(_) => vec![exit::ABORTED],
        TransferResult::Failed(_) => vec![exit::FAILED],
        TransferResult::CanaryFailed(_) => vec![exit::CANARY_FAILED],
        TransferResult::Partial(_) => vec![exit::PARTIAL],
        TransferResult::Ok(ran) => {
            let mut c = vec![exit::OK];
            if ran.pos.iter().any(hook_failed) {
                c.push(exit::HOOK);
            }
            if ran.skipped > 0 {
                c.push(exit::SKIPPED);
            }
            c
        }
    }
}

/// The exit code: the first in `PRECEDENCE` that applies.
pub fn code(r: &TransferResult) -> u8 {
    let codes = applies(r);
    PRECEDENCE.into_iter().find(|c| codes.contains(c)).unwrap_or(exit::OK)
}

/// `transfer=ID class=C result=R pos=OK/N bytes=N seconds=S rate=B/S`.
pub fn summary_line(transfer: u64, class: &str, result: &str, pos: (usize, usize), bytes: u64, secs: f64) -> String {
    let rate = if secs > 0.0 { (bytes as f64 / secs) as u64 } else { 0 };
    let (ok, n) = pos;
    format!(
        "transfer={transfer} class={class} result={result} pos={ok}/{n} bytes={bytes} seconds={secs:.2} rate={rate}"
    )
}

/// The report for `o`, after logging the end of the transfer.
pub fn report(o: &Outcome) -> Report {
    let result = o.result.name();
    let code = code(&o.result);
    match &o.result {
        TransferResult::Denied(e) | TransferResult::SourceFailed(e) => {
            log::error!("event=transfer_end class={} result={result} error={}", o.class, kv_quote(e));
            let summary = summary_line(o.transfer, &o.class, result, (0, 0), 0, 0.0);
            // The error may quote a CAC or a po: one line, text only.
            Report { code, stderr: vec![format!("masterwugui: {}", printable(e))], stdout: vec![summary] }
        }
        TransferResult::DryRun(d) => {
            let ok = d.answers.iter().filter(|(_, a)| a.is_ok()).count();
            let summary = summary_line(o.transfer, &o.class, result, (ok, d.pos.len()), d.bytes, 0.0);
            log::info!("event=dry_run {summary}");
            let mut stdout = dry_run_plan(d);
            stdout.push(summary);
            let stderr = d
                .answers
                .iter()
                .filter_map(|(name, a)| a.as_ref().err().map(|e| (name, e)))
                .map(|(name, e)| {
                    po_line(&PoOutcome { name: name.clone(), failed: Some(e.clone()), hook: None, unchanged: false })
                })
                .collect();
            Report { code, stderr, stdout }
        }
        TransferResult::Ok(r)
        | TransferResult::Partial(r)
        | TransferResult::Failed(r)
        | TransferResult::Aborted(r)
        | TransferResult::CanaryFailed(r) => {
            let ok = r.pos.iter().filter(|p| p.failed.is_none()).count();
            let secs = r.elapsed.as_secs_f64();
            let mut summary = summary_line(o.transfer, &o.class, result, (ok, r.pos.len()), r.bytes, secs);
            // Appended, and only when some po held the tree already: the line's fields before
            // it stay as they were.
            let unchanged = r.pos.iter().filter(|p| p.failed.is_none() && p.unchanged).count();
            if unchanged > 0 {
                summary += &format!(" unchanged={unchanged}");
            }
            // Source files --skip-unreadable left out (exit 8 when every po committed).
            if r.skipped > 0 {
                summary += &format!(" skipped={}", r.skipped);
            }
            // With site labels: what entered each remote site (the figure to watch), and one
            // stdout line a site link before the summary.
            if !r.site_in.is_empty() {
                let sites: Vec<String> = r.site_in.iter().map(|(s, b)| format!("{s}:{b}")).collect();
                summary += &format!(" site_in={}", sites.join(","));
            }
            let mut stdout = Vec::new();
            for l in &r.site_links {
                let line = format!("site_bytes from={} to={} bytes={}", l.from, l.to, l.bytes);
                log::info!("event={line} transfer={}", o.transfer);
                stdout.push(line);
            }
            for (site, b) in &r.site_in {
                let ratio = *b as f64 / r.bytes.max(1) as f64;
                log::info!("event=site_in transfer={} site={site} bytes={b} ratio={ratio:.3}", o.transfer);
            }
            log::info!(
                "event=transfer_end {summary} blocks={} master_blocks={} master_bytes={} src_copies={:.2}",
                r.blocks,
                r.master_blocks,
                r.master_bytes,
                r.master_bytes as f64 / r.bytes.max(1) as f64
            );
            let stderr = r.pos.iter().filter(|p| p.failed.is_some() || hook_failed(p)).map(po_line).collect();
            stdout.push(summary);
            Report { code, stderr, stdout }
        }
    }
}

/// `po=ADDR result=failed|hook_failed error="..." hook_exit=N|- hook_tail="..."`. The error and
/// the tail come from the po: quotes become `'` and control characters are escaped, so a line
/// stays one line and a terminal shows text only.
fn po_line(p: &PoOutcome) -> String {
    let result = if p.failed.is_some() { "failed" } else { "hook_failed" };
    let (exit, tail) = match &p.hook {
        Some((exit, tail)) => (exit.to_string(), tail.as_str()),
        None => ("-".to_string(), ""),
    };
    format!(
        "po={} result={result} error=\"{}\" hook_exit={exit} hook_tail=\"{}\"",
        p.name,
        printable(&p.failed.as_deref().unwrap_or("").replace('"', "'")),
        printable(&tail.replace('"', "'"))
    )
}

/// The link rate a dry run's estimate assumes when the class has no `rate_limit`.
const NOMINAL_RATE: u64 = 125_000_000;

/// `-i`: one line per path, in rsync's spirit.
fn item_line(kind: PreviewKind, path: &[u8]) -> String {
    let path = printable(&String::from_utf8_lossy(path));
    match kind {
        PreviewKind::CreateFile => format!(">f+++++++++ {path}"),
        PreviewKind::ChangeFile => format!(">f.st...... {path}"),
        PreviewKind::CreateDir => format!("cd+++++++++ {path}/"),
        PreviewKind::CreateLink => format!("cL+++++++++ {path}"),
        PreviewKind::ChangeLink => format!("cL.t....... {path}"),
        PreviewKind::Delete => format!("*deleting   {path}"),
    }
}

/// What a dry run would move: the tree, each po's answer, and how long it would take at the
/// class rate (else at a nominal link rate, said so).
fn dry_run_plan(d: &DryRun) -> Vec<String> {
    let c = &d.class;
    let mut plan = vec![format!(
        "dry-run class={} dest={} files={} dirs={} symlinks={} bytes={} blocks={} block_size={} p2p={} verify={} publish={}",
        c.name,
        c.dest,
        d.files,
        d.dirs,
        d.symlinks,
        d.bytes,
        d.blocks,
        d.block_size,
        if c.p2p { "on" } else { "off" },
        c.verify,
        if c.publish == Publish::Each { "each" } else { "together" }
    )];
    let (mut sum, mut most) = (0u64, 0u64);
    for (name, a) in &d.answers {
        let Ok(p) = a else { continue };
        plan.push(format!(
            "po={name} would create={} change={} delete={} bytes={}",
            p.create, p.change, p.delete, p.bytes
        ));
        plan.extend(p.items.iter().map(|(k, path)| format!("  {}", item_line(*k, path))));
        if p.more > 0 {
            plan.push(format!("  ... {} more", p.more));
        }
        sum += p.bytes;
        most = most.max(p.bytes);
    }
    // The master uploads every po's bytes directly; in a swarm about one po's worth.
    let bytes = if c.p2p { most } else { sum };
    let (rate, which) = match c.rate_limit {
        0 => (NOMINAL_RATE, "a nominal 1 Gbit/s link (no class rate_limit; not measured)".to_string()),
        r => (r, format!("the class rate_limit={r} bytes/s")),
    };
    plan.push(format!("estimate seconds={:.1} bytes={bytes} at {which}", bytes as f64 / rate as f64));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::master::Ran;
    use crate::proto::ClassCfg;
    use std::time::Duration;

    fn po(name: &str, failed: Option<&str>, hook: Option<(i32, &str)>) -> PoOutcome {
        PoOutcome {
            name: name.into(),
            failed: failed.map(Into::into),
            hook: hook.map(|(c, t)| (c, t.into())),
            unchanged: false,
        }
    }

    fn ran(pos: Vec<PoOutcome>) -> Ran {
        Ran {
            bytes: 3000,
            blocks: 3,
            elapsed: Duration::from_millis(1500),
            master_blocks: 3,
            master_bytes: 3000,
            pos,
            skipped: 0,
            site_links: Vec::new(),
            site_in: Vec::new(),
        }
    }

    fn outcome(result: TransferResult) -> Outcome {
        Outcome { transfer: 7, class: "base1".into(), result }
    }

    #[test]
    fn codes_follow_the_documented_precedence() {
        let hook = || po("b:1", None, Some((3, "port \"busy\"\nreload failed")));
        let failed = || po("c:1", Some("disk \"full\""), None);
        let cases = [
            (TransferResult::SourceFailed("no dir".into()), 1),
            (TransferResult::Denied("refused".into()), 2),
            (TransferResult::Failed(ran(vec![failed(), failed()])), 4),
            (TransferResult::Partial(ran(vec![hook(), failed()])), 3),
            (TransferResult::Ok(ran(vec![po("a:1", None, Some((0, "ok"))), hook()])), 5),
            (TransferResult::Ok(ran(vec![po("a:1", None, None)])), 0),
            (TransferResult::Aborted(ran(vec![failed()])), 6),
            (TransferResult::CanaryFailed(ran(vec![failed()])), 7),
            (TransferResult::Ok(Ran { skipped: 2, ..ran(vec![hook()]) }), 5),
            (TransferResult::Ok(Ran { skipped: 2, ..ran(vec![po("a:1", None, None)]) }), 8),
        ];
        for (r, want) in cases {
            assert_eq!(code(&r), want, "{r:?}");
        }
    }

    #[test]
    fn the_precedence_lists_every_code_once_and_the_readme_has_the_table() {
        let mut p = PRECEDENCE.to_vec();
        p.sort();
        assert_eq!(p, CODES.map(|(c, _)| c));
        let readme = include_str!("../../README.md");
        for (c, meaning) in CODES {
            let row = format!("| {c} | {meaning} |");
            assert!(readme.contains(&row), "README lacks the row {row:?}");
        }
        let order: Vec<String> = PRECEDENCE.iter().map(u8::to_string).collect();
        assert!(readme.contains(&format!("in the order {}.", order.join(", "))), "README's precedence differs");
        assert!(readme.contains(&format!("result={RESULTS}")), "README's result words differ");
    }

    #[test]
    fn an_abort_counts_the_pos_that_published() {
        let r = report(&outcome(TransferResult::Aborted(ran(vec![
            po("a:1", None, None),
            po("b:1", Some("aborted"), None),
        ]))));
        assert_eq!(r.code, 6);
        assert_eq!(r.stdout, ["transfer=7 class=base1 result=aborted pos=1/2 bytes=3000 seconds=1.50 rate=2000"]);
    }

    #[test]
    fn lines_are_byte_for_byte_what_masterwugui_always_printed() {
        let r = report(&outcome(TransferResult::Partial(ran(vec![
            po("a:1", None, Some((0, "fine"))),
            po("b:1", None, Some((3, "port \"busy\"\nreload failed"))),
            po("c:1", Some("disk \"full\"\x1b[2J"), None),
        ]))));
        assert_eq!(r.code, 3);
        assert_eq!(r.stdout, ["transfer=7 class=base1 result=partial pos=2/3 bytes=3000 seconds=1.50 rate=2000"]);
        assert_eq!(
            r.stderr,
            [
                "po=b:1 result=hook_failed error=\"\" hook_exit=3 hook_tail=\"port 'busy'\\nreload failed\"",
                "po=c:1 result=failed error=\"disk 'full'\\x1b[2J\" hook_exit=- hook_tail=\"\"",
            ]
        );
        let r = report(&Outcome { transfer: 0, class: "x".into(), result: TransferResult::Denied("no CAC".into()) });
        assert_eq!(r.stdout, ["transfer=0 class=x result=denied pos=0/0 bytes=0 seconds=0.00 rate=0"]);
        assert_eq!(r.stderr, ["masterwugui: no CAC"]);
        let r = report(&outcome(TransferResult::SourceFailed("source /x: gone".into())));
        assert_eq!((r.code, r.stdout[0].contains("result=failed pos=0/0")), (1, true));
    }

    #[test]
    fn site_links_come_before_the_summary_which_ends_with_site_in() {
        use crate::proto::sites::SiteLink;
        let link = |from: &str, to: &str, bytes| SiteLink { from: from.into(), to: to.into(), bytes };
        let ran = Ran {
            site_links: vec![link("master", "bj", 3000), link("bj", "bj", 3000)],
            site_in: vec![("bj".into(), 3000)],
            ..ran(vec![po("a:1", None, None), po("b:1", None, None)])
        };
        let r = report(&outcome(TransferResult::Ok(ran)));
        assert_eq!(
            r.stdout,
            [
                "site_bytes from=master to=bj bytes=3000",
                "site_bytes from=bj to=bj bytes=3000",
                "transfer=7 class=base1 result=ok pos=2/2 bytes=3000 seconds=1.50 rate=2000 site_in=bj:3000",
            ]
        );
    }

    #[test]
    fn a_dry_run_prints_each_pos_answer_then_the_summary() {
        use crate::proto::msg::Preview;
        let mut class = ClassCfg::new("base1");
        class.set("dest", "/data").unwrap();
        class.set("rate_limit", "1000").unwrap();
        let a = Preview {
            transfer: 7,
            create: 1,
            change: 1,
            delete: 1,
            bytes: 1500,
            items: vec![(PreviewKind::CreateFile, b"new".to_vec()), (PreviewKind::ChangeFile, b"x/y".to_vec())],
            more: 1,
        };
        let d = |answers| DryRun {
            class: class.clone(),
            files: 2,
            dirs: 1,
            symlinks: 0,
            bytes: 500,
            blocks: 2,
            block_size: 4096,
            pos: vec!["a:1".into(), "b:1".into()],
            answers,
        };
        let r = report(&outcome(TransferResult::DryRun(Box::new(d(vec![
            ("a:1".into(), Ok(a.clone())),
            ("b:1".into(), Ok(Preview { bytes: 500, ..Preview::default() })),
        ])))));
        assert_eq!(r.code, 0);
        assert!(r.stderr.is_empty());
        assert!(
            r.stdout[0].starts_with(
                "dry-run class=base1 dest=/data files=2 dirs=1 symlinks=0 bytes=500 blocks=2 block_size=4096 p2p=off verify="
            ),
            "{:?}",
            r.stdout
        );
        assert_eq!(
            r.stdout[1..7],
            [
                "po=a:1 would create=1 change=1 delete=1 bytes=1500",
                "  >f+++++++++ new",
                "  >f.st...... x/y",
                "  ... 1 more",
                "po=b:1 would create=0 change=0 delete=0 bytes=500",
                "estimate seconds=2.0 bytes=2000 at the class rate_limit=1000 bytes/s",
            ]
        );
        assert_eq!(r.stdout[7], "transfer=7 class=base1 result=dry-run pos=2/2 bytes=500 seconds=0.00 rate=0");
        // A po that refuses fails the dry run as it would fail the push.
        let refused = || ("b:1".to_string(), Err("refused (dest_not_allowed): dest /data".to_string()));
        let r = report(&outcome(TransferResult::DryRun(Box::new(d(vec![("a:1".into(), Ok(a.clone())), refused()])))));
        assert_eq!(r.code, 3);
        assert_eq!(r.stderr.len(), 1);
        assert!(r.stderr[0].starts_with("po=b:1 result=failed error=\"refused (dest_not_allowed)"), "{:?}", r.stderr);
        let r = report(&outcome(TransferResult::DryRun(Box::new(d(vec![refused()])))));
        assert_eq!(r.code, 4);
    }
}
