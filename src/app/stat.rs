//! `wugui-stat`: live transfer status from a CAC or a po.

use crate::proto::msg::TransferStat;
use crate::proto::{wire, Msg, Payload};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One StatQuery over a fresh connection (blocking, bounded by timeouts).
pub fn query(addr: &str) -> Result<Vec<TransferStat>, String> {
    let sa = crate::config::resolve(addr)?;
    let mut s = TcpStream::connect_timeout(&sa, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT)).ok();
    s.set_write_timeout(Some(TIMEOUT)).ok();
    s.write_all(&Msg::StatQuery.to_frame()).map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut head).map_err(|e| format!("{addr}: no answer: {e}"))?;
    let h = wire::parse_header(&head).map_err(|e| format!("{addr}: {e}"))?.ok_or("short header")?;
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body).map_err(|e| format!("{addr}: {e}"))?;
    match Msg::decode(h.ty, Payload::from_vec(body)).map_err(|e| format!("{addr}: {e}"))? {
        Msg::StatReply { transfers } => Ok(transfers),
        Msg::Denied { reason, text } => {
            Err(format!("{addr} refused ({}): {}", reason.name(), crate::logging::printable(&text)))
        }
        other => Err(format!("{addr}: unexpected {:?}", other.ty())),
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A CAC with more transfers than one reply holds ends its list with a count of the rest.
fn split_omitted(ts: &[TransferStat]) -> (&[TransferStat], u64) {
    ts.split_last().and_then(|(last, rest)| Some((rest, last.omitted_count()?))).unwrap_or((ts, 0))
}

/// What to show: newest first (by start, then by id, which grows with the grant time), only
/// transfer `id` if one is asked for; a CAC's count of left-out transfers stays last.
pub fn select(ts: &[TransferStat], id: Option<u64>) -> Vec<TransferStat> {
    let (list, omitted) = split_omitted(ts);
    let mut out: Vec<TransferStat> = list.iter().filter(|t| id.is_none_or(|id| t.transfer == id)).cloned().collect();
    out.sort_by_key(|t| std::cmp::Reverse((t.started_unix, t.transfer)));
    if omitted > 0 && id.is_none() {
        out.push(TransferStat::omitted(omitted));
    }
    out
}

pub fn to_json(ts: &[TransferStat]) -> String {
    let (ts, omitted) = split_omitted(ts);
    let items: Vec<String> = ts
        .iter()
        .map(|t| {
            let pos: Vec<String> = t
                .pos
                .iter()
                .map(|p| {
                    format!(
                        "{{\"addr\":{},\"state\":{},\"bytes\":{},\"error\":{}}}",
                        json_str(&p.addr),
                        json_str(&p.state),
                        p.bytes,
                        json_str(&p.error)
                    )
                })
                .collect();
            // Only a class with site labels has them, so other scripts see the same keys.
            let sites: Vec<String> = t
                .sites
                .iter()
                .map(|l| format!("{{\"from\":{},\"to\":{},\"bytes\":{}}}", json_str(&l.from), json_str(&l.to), l.bytes))
                .collect();
            let sites = if sites.is_empty() { String::new() } else { format!(",\"sites\":[{}]", sites.join(",")) };
            format!(
                "{{\"transfer\":\"{}\",\"class\":{},\"master\":{},\"state\":{},\"total\":{},\"done\":{},\"started_unix\":{},\"elapsed_ms\":{},\"rate\":{},\"pos\":[{}]{sites}}}",
                t.transfer,
                json_str(&t.class),
                json_str(&t.master),
                json_str(&t.state),
                t.total,
                t.done,
                t.started_unix,
                t.elapsed_ms,
                t.rate,
                pos.join(",")
            )
        })
        .collect();
    let omitted = if omitted > 0 { format!(",\"omitted\":{omitted}") } else { String::new() };
    format!("{{\"transfers\":[{}]{omitted}}}", items.join(","))
}

/// The table: TOTAL and DONE are the JSON's `total` (the tree, one copy) and `done` (bytes
/// held, summed over the pos), so PCT is DONE of TOTAL × POS. START is the wall-clock start
/// (UTC, as log lines); a po does not know it.
pub fn to_table(ts: &[TransferStat]) -> String {
    use super::human;
    use crate::logging::printable as p;
    let (ts, omitted) = split_omitted(ts);
    let mut o = format!(
        "{:<20} {:<12} {:<11} {:<20} {:>4} {:>5} {:>8} {:>8} {:>9} {:>7}  {}\n",
        "TRANSFER", "CLASS", "STATE", "START", "POS", "PCT", "TOTAL", "DONE", "RATE", "ETA", "MASTER"
    );
    for t in ts {
        let n = t.pos.len().max(1) as u64;
        let want = t.total * n;
        let pct = (t.done.min(want) * 100).checked_div(want).unwrap_or(100);
        let start = if t.started_unix == 0 { "-".into() } else { crate::logging::format_unix_secs(t.started_unix) };
        o += &format!(
            "{:<20} {:<12} {:<11} {:<20} {:>4} {:>4}% {:>8} {:>8} {:>7}/s {:>7}  {}\n",
            t.transfer,
            p(&t.class),
            p(&t.state),
            start,
            t.pos.len(),
            pct,
            human(t.total),
            human(t.done),
            human(t.rate),
            super::eta(want.saturating_sub(t.done), t.rate),
            p(&t.master)
        );
        for po in &t.pos {
            let pp = (po.bytes.min(t.total) * 100).checked_div(t.total).unwrap_or(100);
            let err = if po.error.is_empty() { String::new() } else { format!("  error={}", p(&po.error)) };
            o += &format!("    po {:<24} {:<11} {:>4}% {:>8}{err}\n", p(&po.addr), p(&po.state), pp, human(po.bytes));
        }
        // Bytes per site link; the ratio to the tree's size is what crossed into the site.
        for l in &t.sites {
            let ratio = l.bytes as f64 / t.total.max(1) as f64;
            let link = format!("{} -> {}", p(&l.from), p(&l.to));
            o += &format!("    site {:<24} {:>8} {ratio:>6.2}x  bytes={}\n", link, human(l.bytes), l.bytes);
        }
    }
    if ts.is_empty() {
        o += "(no transfers)\n";
    }
    if omitted > 0 {
        o += &format!("({omitted} older transfers not shown: the reply holds one frame)\n");
    }
    o
}

pub fn main() -> ExitCode {
    let mut o = getopts::Options::new();
    o.optopt("s", "", "the CAC or po to ask", "HOST:PORT");
    o.optflag("", "json", "print JSON for scripts");
    o.optflag("w", "", "refresh like top until interrupted");
    o.optopt("i", "", "refresh interval in seconds with -w (default 1)", "SECS");
    o.optopt("t", "", "show only this transfer", "ID");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let brief = "Usage: wugui-stat -s HOST:PORT [-t ID] [--json] [-w [-i SECS]]\n\nShows the transfers a CAC (all that its masters report) or a po (what arrives there) knows,\nnewest first. TOTAL is the tree's size, DONE the bytes held summed over its pos (as in --json).";
    let tail = "\nExit codes: 0 shown; 1 usage error, or no transfer ID there (-t, without -w); 2 no answer.\n";
    let m = match super::parse_args(o, "wugui-stat", brief, tail, &args) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let Some(addr) = m.opt_str("s") else {
        return super::usage_error("wugui-stat", "-s HOST:PORT is required");
    };
    let id = match m.opt_str("t").map(|t| t.parse::<u64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return super::usage_error("wugui-stat", "-t takes a transfer id (a number)"),
    };
    let json = m.opt_present("json");
    let interval = m.opt_str("i").and_then(|s| s.parse::<f64>().ok()).filter(|s| *s >= 0.1).unwrap_or(1.0);
    loop {
        let out = match query(&addr).map(|ts| select(&ts, id)) {
            Ok(ts) if ts.is_empty() && id.is_some() && !m.opt_present("w") => {
                let keep = crate::proto::cac::KEEP_DONE.as_secs() / 60;
                let id = id.unwrap_or_default();
                eprintln!("wugui-stat: {addr} knows no transfer {id} (a CAC shows a finished one for {keep} minutes)");
                return ExitCode::from(1);
            }
            Ok(ts) if json => to_json(&ts) + "\n",
            Ok(ts) => to_table(&ts),
            Err(e) => {
                eprintln!("wugui-stat: {e}");
                if !m.opt_present("w") {
                    return ExitCode::from(2);
                }
                String::new()
            }
        };
        if !m.opt_present("w") {
            print!("{out}");
            return ExitCode::SUCCESS;
        }
        // Clear the screen and home the cursor, as top does.
        print!("\x1b[H\x1b[2J{addr}  every {interval}s\n\n{out}");
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs_f64(interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::msg::PoStat;
    use crate::proto::sites::SiteLink;

    /// Whatever a master or a po reported reaches the terminal with its control characters
    /// escaped: no escape sequence, no line of its own.
    #[test]
    fn reported_text_cannot_drive_the_terminal() {
        let evil = "a\x1b[2J\u{9b}1m\nb\"c";
        let t = TransferStat {
            transfer: 1,
            class: evil.into(),
            master: evil.into(),
            state: evil.into(),
            total: 10,
            pos: vec![PoStat { addr: evil.into(), state: evil.into(), bytes: 5, error: evil.into() }],
            sites: vec![SiteLink { from: evil.into(), to: evil.into(), bytes: 1 }],
            ..Default::default()
        };
        for out in [to_table(std::slice::from_ref(&t)), to_json(&[t])] {
            assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
            assert!(!out.contains("\nb"), "{out:?}");
        }
    }

    /// Newest first whatever order the reply had, one transfer by id, and the table's TOTAL
    /// and DONE are the JSON's `total` and `done`.
    #[test]
    fn newest_first_one_by_id_and_the_same_totals_as_json() {
        let t = |transfer, started_unix, done| TransferStat {
            transfer,
            started_unix,
            total: 3 << 20,
            done,
            state: "sending".into(),
            pos: vec![PoStat::default(), PoStat::default()],
            ..Default::default()
        };
        let ts = [t(5, 1_795_674_000, 1 << 20), t(9, 1_795_674_063, 6 << 20), t(7, 0, 0), TransferStat::omitted(3)];
        let order: Vec<u64> = select(&ts, None).iter().map(|t| t.transfer).collect();
        assert_eq!(order, [9, 5, 7, 0]);
        assert_eq!(select(&ts, Some(5)), [ts[0].clone()]);
        assert!(select(&ts, Some(6)).is_empty());
        let table = to_table(&select(&ts, Some(9)));
        let row = table.lines().nth(1).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        // The class and the master are empty here.
        assert_eq!(cols, ["9", "sending", "2026-11-26T06:21:03Z", "2", "100%", "3.0M", "6.0M", "0B/s", "-"], "{table}");
        assert!(to_json(&select(&ts, Some(9))).contains("\"total\":3145728,\"done\":6291456"));
    }

    /// Bytes per site link: a row each in the table, a `sites` list in the JSON (only then).
    #[test]
    fn site_links_show_in_both_outputs() {
        let t = TransferStat {
            transfer: 3,
            total: 1 << 20,
            sites: vec![
                SiteLink { from: "master".into(), to: "bj".into(), bytes: 1 << 20 },
                SiteLink { from: "bj".into(), to: "bj".into(), bytes: 7 << 20 },
            ],
            ..Default::default()
        };
        let table = to_table(std::slice::from_ref(&t));
        assert!(table.contains("    site master -> bj"), "{table}");
        assert!(table.contains("1.00x  bytes=1048576\n"), "{table}");
        assert!(table.contains("7.00x  bytes=7340032\n"), "{table}");
        let json = to_json(std::slice::from_ref(&t));
        assert!(json.contains(",\"sites\":[{\"from\":\"master\",\"to\":\"bj\",\"bytes\":1048576},"), "{json}");
        assert!(!to_json(&[TransferStat::default()]).contains("sites"));
    }

    #[test]
    fn eta_reads_at_a_glance() {
        use super::super::eta;
        assert_eq!([eta(0, 5), eta(5, 0), eta(90, 2), eta(7200, 1), eta(59, 1)], ["-", "-", "45s", "2h00m", "59s"]);
        assert_eq!(eta(200, 1), "3m20s");
    }

    /// A CAC's reply that had to leave transfers out says how many, in both outputs.
    #[test]
    fn left_out_transfers_are_counted_not_listed() {
        let ts =
            [TransferStat { transfer: 9, state: "sending".into(), ..Default::default() }, TransferStat::omitted(1500)];
        let table = to_table(&ts);
        assert!(table.contains("(1500 older transfers not shown"), "{table}");
        assert!(!table.contains("omitted"), "{table}");
        assert!(to_json(&ts).ends_with("}],\"omitted\":1500}"), "{}", to_json(&ts));
        assert_eq!(to_json(&ts[..1]), to_json(&ts).replace(",\"omitted\":1500", ""));
    }
}
