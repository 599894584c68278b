//! The files an operator installs: the systemd unit in `deploy/` is checked with
//! `systemd-analyze verify` where that tool exists (it needs no running systemd).

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/chat-server.service"
    ))
    .expect("deploy/chat-server.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/chat-server\n"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; only the unit's text was checked");
        return;
    }
    // Verified as installed, except that the binary is the one just built (verify checks
    // that ExecStart names an executable).
    let binary = chat_tests::server_binary();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("chat-server.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/chat-server",
            binary.to_str().expect("a UTF-8 path"),
        ),
    )
    .expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Anything it says about our file is a mistake in it.
    assert!(!stderr.contains("chat-server.service"), "{stderr}");
}
