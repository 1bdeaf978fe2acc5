//! System test: the shop's OpenAPI document says what the server does. schemathesis
//! (installed by `.ci/setup`, pinned there) runs every check over every operation,
//! authenticated, with a fixed seed, against a level-1 environment; any mismatch (an
//! undocumented status, a valid request refused, an invalid one accepted, a server
//! error) fails the test with schemathesis's report. `bench/contract.sh` runs a longer one.

mod support;

use std::process::Command;

use support::{Home, text};

/// How schemathesis is started: through the Python that has it, whatever is on PATH.
fn schemathesis() -> Option<Command> {
    let probe = Command::new("python3").args(["-c", "import schemathesis.cli"]).output().ok()?;
    if !probe.status.success() {
        return None;
    }
    let mut c = Command::new("python3");
    c.args(["-c", "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())"]);
    Some(c)
}

fn post(url: &str, body: serde_json::Value) -> serde_json::Value {
    let resp = reqwest::blocking::Client::new().post(url).json(&body).send().unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().unwrap()
}

#[test]
fn the_shop_does_what_its_openapi_document_says() {
    let Some(mut st) = schemathesis() else {
        eprintln!("skipped: schemathesis is not installed (bash .ci/setup installs the pinned version)");
        return;
    };
    let home = Home::new();
    let env = home.env("contract");
    let up = home.json(&["up", "--level", "1", "--env", &env, "-q"]);
    let shop = up["endpoints"]["shop"].as_str().unwrap().to_string();
    post(&format!("{shop}/register"), serde_json::json!({"email": "contract@example.test", "password": "password1", "roles": "both"}));
    let login = post(&format!("{shop}/login"), serde_json::json!({"email": "contract@example.test", "password": "password1"}));
    let token = login["token"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = st
        .current_dir(work.path())
        .args(["run", &format!("{shop}/openapi.json"), "--checks", "all", "--max-examples", "30", "--seed", "1"])
        // The run would end its own session and see only 401s after.
        .args(["--exclude-path", "/logout", "-H", &format!("Authorization: Bearer {token}")])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "schemathesis found mismatches:\n{report}");
    assert!(report.contains("passed"), "{report}");
    home.expect(0, &["down", "--env", &env, "-q"]);
}
