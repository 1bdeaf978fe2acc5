//! System test: generated passwords stay where they belong. A level 3 is brought up and
//! worked (an order, a switchover), then everything scalectl shows about it, every log
//! and config file it wrote and every process's command line are searched for each
//! password it generated. (It found the shop's password in pg_stat_statements' query
//! texts, from `ALTER ROLE … PASSWORD`; roles now get a SCRAM verifier instead.)

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::shop::Shopper;
use support::{Home, text};

/// Every file under `dir` (not following links), skipping WAL-sized ones.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            files(&entry.path(), out);
        } else if meta.is_file() && meta.len() < 4 << 20 {
            out.push(entry.path());
        }
    }
}

#[test]
fn passwords_appear_only_in_owner_only_files_that_need_them() {
    let home = Home::new();
    let env = home.env("secrets");
    let mut shown: Vec<(String, String)> = Vec::new();
    // `status` exits 1 while a component is unhealthy (the old leader rejoining after
    // the switchover, say), and `logs` 2 for a task that keeps no log; their output is
    // searched all the same.
    let mut run = |what: &str, args: &[&str]| -> String {
        let out = if matches!(args[0], "status" | "logs") { home.run(args) } else { home.expect(0, args) };
        assert!(matches!(out.status.code(), Some(0..=2)), "scalectl {args:?}: {}", text(&out.stderr));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        shown.push((what.to_string(), all.clone()));
        text(&out.stdout)
    };
    let up = run("up -o json", &["up", "--level", "3", "--env", &env, "-o", "json"]);
    let up: serde_json::Value = serde_json::from_str(&up).unwrap();
    let s = Shopper::new(up["endpoints"]["shop"].as_str().unwrap(), 10);
    s.order("secrets-1");
    run("switchover", &["switchover", "--env", &env]);
    s.order("secrets-2");
    run("plan", &["plan", "--env", &env]);
    run("plan -o json", &["plan", "--env", &env, "-o", "json"]);
    let status = run("status -o json", &["status", "--env", &env, "-o", "json"]);
    run("status", &["status", "--env", &env]);
    run("list -o json", &["list", "-o", "json"]);
    let rendered = home.root.parent().unwrap().join("rendered");
    run("render", &["render", "--env", &env, "--out", rendered.to_str().unwrap()]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    for c in status["components"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        run(&format!("logs {id}"), &["logs", "--env", &env, id, "-n", "100000"]);
    }
    let mut rendered_files = Vec::new();
    files(&rendered, &mut rendered_files);
    assert!(!rendered_files.is_empty(), "render wrote the config files");
    for f in rendered_files {
        shown.push((format!("rendered {}", f.display()), String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned()));
    }

    let dir = home.env_dir(&env);
    let mut secrets = Vec::new();
    for entry in std::fs::read_dir(dir.join("secrets")).unwrap().flatten() {
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is readable by others", entry.path().display());
        let password = std::fs::read_to_string(entry.path()).unwrap().trim().to_string();
        assert!(password.len() >= 16, "{} holds a short password", entry.path().display());
        secrets.push((entry.file_name().to_string_lossy().into_owned(), password));
    }
    assert!(secrets.len() >= 3, "the shop's, the replication and Redis's password at least: {secrets:?}");

    // What scalectl shows: no password, anywhere.
    for (what, output) in &shown {
        for (name, password) in &secrets {
            assert!(!output.contains(password.as_str()), "the {name} password appears in `{what}`");
        }
    }
    // Redis answers no one without the password.
    let redis = status["components"].as_array().unwrap().iter().find(|c| c["kind"] == "redis").expect("level 3 has Redis");
    let mut conn = std::net::TcpStream::connect(redis["address"].as_str().unwrap()).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    std::io::Write::write_all(&mut conn, b"PING\r\n").unwrap();
    let mut reply = [0u8; 64];
    let n = std::io::Read::read(&mut conn, &mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply[..n]).starts_with("-NOAUTH"), "{}", String::from_utf8_lossy(&reply[..n]));
    // Patroni's REST API takes no change without credentials (the switchover above
    // went through with them); reads need none.
    let nodes: Vec<_> = status["components"].as_array().unwrap().iter().filter(|c| c["kind"] == "patroni-node").collect();
    assert_eq!(nodes.len(), 3, "level 3 has three Patroni nodes");
    for n in nodes {
        let host = n["address"].as_str().unwrap().rsplit_once(':').unwrap().0;
        let ask = |request: &str| -> String {
            let mut conn = std::net::TcpStream::connect(format!("{host}:8008")).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            std::io::Write::write_all(&mut conn, request.as_bytes()).unwrap();
            let mut reply = String::new();
            let _ = std::io::Read::read_to_string(&mut conn, &mut reply);
            reply.lines().next().unwrap_or_default().to_string()
        };
        let change = ask("POST /reload HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        assert!(change.contains(" 401"), "{host}: an unauthenticated POST /reload was answered {change}");
        let read = ask("GET /cluster HTTP/1.0\r\n\r\n");
        assert!(read.contains(" 200"), "{host}: GET /cluster was answered {read}");
    }
    // No process's command line (which every user can read) carries one.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        for (name, password) in &secrets {
            assert!(!cmdline.contains(password.as_str()), "the {name} password is in the command line of {}", entry.path().display());
        }
    }
    // The files that hold one are readable by their owner only, and the ones that need
    // one have it. Logs and the state file are among the files searched.
    let mut all = Vec::new();
    files(&dir, &mut all);
    let mut holders = Vec::new();
    for f in all.iter().filter(|f| !f.starts_with(dir.join("secrets"))) {
        let body = String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned();
        if secrets.iter().any(|(_, p)| body.contains(p.as_str())) {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} holds a password and is readable by others (mode {mode:o})", f.display());
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.ends_with("log") && name != "state.json", "{} holds a password", f.display());
            holders.push(name);
        }
    }
    // PgBouncer's userlist, Patroni's pgpass and Redis's auth.conf (Patroni, the shop and
    // the Redis exporter get theirs in their environment, which only their user can read).
    for needed in ["userlist.txt", "pgpass", "auth.conf"] {
        assert!(holders.iter().any(|h| h == needed), "{needed} holds its password: {holders:?}");
    }
}
