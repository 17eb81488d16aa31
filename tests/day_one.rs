//! What a new user meets first, with real processes: `-t` config checks, `wugui-stat -t ID`,
//! errors that name the next step, and a README that lists every log event.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `bin -t -f conf`: (exit code, stdout, stderr).
fn check(bin_name: &str, conf: &Path) -> (Option<i32>, String, String) {
    let mut c = Command::new(bin(bin_name));
    c.arg("-t").arg("-f").arg(conf);
    let o = run_bounded(c, Duration::from_secs(10));
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

fn write_key(p: &Path, key: &str, mode: u32) {
    fs::write(p, key).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn cac_t_checks_the_config_and_every_class_file() {
    let d = TempDir::new("check-cac");
    let dir = d.path();
    write_key(&dir.join("cluster.key"), "0123456789abcdef0123456789abcdef0123456789\n", 0o600);
    write_key(&dir.join("m.secret"), "0123456789abcdef0123456789abcdef0123456789\n", 0o600);
    let class = |dest: &str| {
        format!(
            "[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\n[class c1]\npo = 127.0.0.1:7200\nmasters = 127.0.0.1\nmaster_secret_file = m.secret\ndest = {dest}\n"
        )
    };
    let conf = dir.join("cac.conf");
    fs::write(&conf, class("/srv/data")).unwrap();
    assert_eq!(check("wugui-cac", &conf), (Some(0), "ok\n".into(), String::new()));

    for (dest, needle) in [("/srv/../etc", "must not contain `..`"), ("srv", "absolute"), ("/srv//x", "not normalised")]
    {
        fs::write(&conf, class(dest)).unwrap();
        let (code, out, err) = check("wugui-cac", &conf);
        assert_eq!((code, out.as_str()), (Some(1), ""), "{dest}: {err}");
        assert!(err.starts_with(&format!("{}:8: dest", conf.display())) && err.contains(needle), "{dest}: {err}");
    }

    // An unreadable class secret is named with its line.
    fs::write(&conf, class("/srv/data").replace("m.secret", "missing.secret")).unwrap();
    let (code, _, err) = check("wugui-cac", &conf);
    assert_eq!(code, Some(1));
    assert!(err.contains("cac.conf:7: master_secret_file") && err.contains("missing.secret"), "{err}");

    // A world-readable, short cluster key is still ok, with two warnings.
    write_key(&dir.join("cluster.key"), "short\n", 0o644);
    fs::write(&conf, class("/srv/data")).unwrap();
    let (code, out, err) = check("wugui-cac", &conf);
    assert_eq!((code, out.as_str()), (Some(0), "ok\n"), "{err}");
    assert!(err.contains("warning: secret_file") && err.contains("world-readable (mode 644"), "{err}");
    assert!(err.contains("holds 5 bytes, fewer than 32"), "{err}");

    // A missing config file.
    let (code, _, err) = check("wugui-cac", &dir.join("nope.conf"));
    assert_eq!(code, Some(1));
    assert!(err.contains("nope.conf: cannot read config"), "{err}");
}

#[test]
fn po_t_and_master_t_check_their_configs() {
    let d = TempDir::new("check-po");
    let dir = d.path();
    let po = dir.join("po.conf");
    let good = "[po]\nlisten = 127.0.0.1:0\ncac = 127.0.0.1:7100\nstate_dir = state\nallow_dest = /srv\n";
    fs::write(&po, good).unwrap();
    assert_eq!(check("wugui-po", &po), (Some(0), "ok\n".into(), String::new()));
    fs::write(&po, good.replace("allow_dest = /srv\n", "allow_dest = srv\n")).unwrap();
    let (code, out, err) = check("wugui-po", &po);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.starts_with(&format!("{}:5: allow_dest", po.display())), "{err}");
    fs::write(&po, good).unwrap();
    fs::write(dir.join("state"), "a file").unwrap();
    let (code, _, err) = check("wugui-po", &po);
    assert_eq!(code, Some(1));
    assert!(err.contains("state_dir") && err.contains("not a directory"), "{err}");

    // masterwugui -t needs no -c or -p, and prints no summary line.
    let m = dir.join("master.conf");
    fs::write(&m, "[master]\ncac = 127.0.0.1:7100\n").unwrap();
    assert_eq!(check("masterwugui", &m), (Some(0), "ok\n".into(), String::new()));
    fs::write(&m, "[master]\ncac = 127.0.0.1:7100\nconnect_timeout = soon\n").unwrap();
    let (code, out, err) = check("masterwugui", &m);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.starts_with(&format!("{}:3: connect_timeout", m.display())), "{err}");
    fs::write(&m, "[master]\n").unwrap();
    let (code, _, err) = check("masterwugui", &m);
    assert_eq!(code, Some(1));
    assert!(err.contains("lacks the required key \"cac\""), "{err}");
}
