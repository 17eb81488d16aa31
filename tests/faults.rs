//! Faults on one side of a transfer: a full disk on one po, a source file that changes while it
//! is sent. Nothing torn is published, old files stay, the others complete.

mod common;
use common::*;
use std::fs;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_full_disk_fails_that_po_alone_and_keeps_its_old_files() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let c = Cluster::start("diskfull", Opts { pos: 3, ..Default::default() });
    // po 1's data folder is a 1 MiB tmpfs holding an old copy.
    let mnt = c.po_dest(1).parent().unwrap().to_path_buf();
    fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(ok.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    fs::create_dir_all(c.po_dest(1)).unwrap();
    fs::write(c.po_dest(1).join("old.txt"), b"yesterday").unwrap();
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), bytes(5, 4 << 20)).unwrap();
    fs::write(src.join("old.txt"), b"today").unwrap();
    let out = c.master(&["-c", "base1", "-p", src.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let line = err.lines().find(|l| l.starts_with("po=")).unwrap();
    assert!(line.contains(&c.pos[1].addr) && line.contains("No space left"), "{line}");
    assert_eq!(fs::read(c.po_dest(1).join("old.txt")).unwrap(), b"yesterday");
    assert!(c.pos[1].log_text().lines().any(|l| l.contains("event=po_failed") && l.contains("No space left")));
    for i in [0, 2] {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
}

#[test]
fn a_source_file_that_changes_while_it_is_sent_is_never_published() {
    let extra = vec!["rate_limit = 2M".into(), "block_size = 256K".into()];
    let c = Cluster::start("changed", Opts { pos: 2, class_extra: extra, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), bytes(6, 6 << 20)).unwrap();
    fs::write(src.join("note.txt"), b"v1").unwrap();
    for i in 0..2 {
        fs::create_dir_all(c.po_dest(i)).unwrap();
        fs::write(c.po_dest(i).join("note.txt"), b"old").unwrap();
    }
    let conf = c.master_conf.clone();
    let s = src.clone();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", s.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(1500));
    // Rewrite it in place while it is being sent: same size, new mtime and bytes.
    fs::write(src.join("big.bin"), bytes(7, 6 << 20)).unwrap();
    let out = master.join().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("big.bin") && err.contains("changed"), "{err}");
    for i in 0..2 {
        assert_eq!(fs::read(c.po_dest(i).join("note.txt")).unwrap(), b"old", "po {i} published a torn copy");
        assert!(!c.po_dest(i).join("big.bin").exists());
    }
}

#[test]
fn a_cac_restart_does_not_break_a_running_transfer() {
    let extra = vec!["rate_limit = 2M".into(), "block_size = 256K".into()];
    let mut c = Cluster::start("cacrestart", Opts { pos: 2, class_extra: extra, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), bytes(8, 6 << 20)).unwrap();
    let conf = c.master_conf.clone();
    let s = src.clone();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", s.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(1200));
    // The CAC goes down mid-transfer and comes back on the same address.
    c.cac.kill();
    std::thread::sleep(Duration::from_millis(500));
    let log = c.cac.log.clone();
    c.cac = Daemon::start("wugui-cac", &c.dir.path().join("cac.conf"), log);
    let out = master.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for i in 0..2 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
    let mlog = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    assert!(mlog.contains("event=cac_lost") && mlog.contains("event=cac_reconnected"), "{mlog}");
    // The restarted CAC learned the transfer from the master's reports.
    let mut s = Command::new(bin("wugui-stat"));
    s.args(["-s", &c.cac.addr]);
    let table = text(&run_bounded(s, Duration::from_secs(10)).stdout);
    assert!(table.contains("base1") && table.contains(" ok "), "{table}");
}
