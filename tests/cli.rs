//! The `ddserver` command line as an operator's script drives it: exit codes,
//! messages, and that a refused command changes nothing. Runs the real
//! binary on a scratch SQLite database; DNS answers are checked with `dig`.

mod common;

use common::{Scratch, dig_short, write_file};

const ZONE: &str = "dyn.example.net";

fn scratch_with_zone() -> Scratch {
    let scratch = Scratch::sqlite("");
    scratch.ok(&[
        "zone",
        "add",
        ZONE,
        "--ns",
        "ns1.example.net",
        "ns2.example.net",
    ]);
    scratch.ok_stdin(
        &[
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.org",
            "--password-stdin",
        ],
        "a long enough password\n",
    );
    scratch
}

fn hosts(scratch: &Scratch) -> String {
    scratch.ok(&["host", "list"])
}

#[test]
fn zone_user_host_lifecycle() {
    let scratch = scratch_with_zone();
    let zones = scratch.ok(&["zone", "list"]);
    assert!(zones.contains(ZONE), "{zones}");

    let out = scratch.ok(&[
        "host",
        "add",
        "home.dyn.example.net",
        "--user",
        "alice",
        "--ipv4",
        "192.0.2.1",
    ]);
    // Without --password-stdin a secret is generated and shown once.
    let secret_line = out
        .lines()
        .find(|l| l.starts_with("update secret: "))
        .expect(&out);
    assert!(secret_line.len() > "update secret: ".len() + 20, "{out}");

    // Unicode names are stored as A-labels and shown as Unicode.
    scratch.ok_stdin(
        &[
            "host",
            "add",
            "bücher.dyn.example.net",
            "--user",
            "alice",
            "--password-stdin",
        ],
        "another secret\n",
    );
    let listed = hosts(&scratch);
    assert!(listed.contains("bücher.dyn.example.net"), "{listed}");
    assert!(listed.contains("home.dyn.example.net"), "{listed}");
    let filtered = scratch.ok(&["host", "list", "--user", "alice", "--zone", ZONE]);
    assert_eq!(filtered.lines().count(), 3, "{filtered}");

    // The export is a master file with the host and the punycode name.
    let export = scratch.ok(&["zone", "export", ZONE]);
    assert!(export.contains("SOA"), "{export}");
    assert!(export.contains("home.dyn.example.net."), "{export}");
    assert!(export.contains("192.0.2.1"), "{export}");

    scratch.ok(&["host", "remove", "home.dyn.example.net"]);
    assert!(!hosts(&scratch).contains("home.dyn"), "host still listed");

    scratch.ok(&["user", "disable", "alice"]);
    assert!(scratch.ok(&["user", "list"]).contains("disabled"));
    scratch.ok(&["user", "enable", "alice"]);
    assert!(scratch.ok(&["user", "list"]).contains("active"));

    // Removing the user removes their hosts; removing the zone, the rest.
    scratch.ok(&["user", "remove", "alice"]);
    assert!(!hosts(&scratch).contains("dyn.example.net"));
    scratch.ok(&["zone", "remove", ZONE]);
    assert!(!scratch.ok(&["zone", "list"]).contains(ZONE));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let scratch = scratch_with_zone();
    scratch.ok_stdin(
        &[
            "host",
            "add",
            "taken.dyn.example.net",
            "--user",
            "alice",
            "--password-stdin",
        ],
        "a secret\n",
    );
    let before = (
        hosts(&scratch),
        scratch.ok(&["zone", "list"]),
        scratch.ok(&["user", "list"]),
    );

    let long_label = format!("{}.dyn.example.net", "a".repeat(64));
    let long_name = format!("{}dyn.example.net", "abcdefghi.".repeat(26));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "host",
                "add",
                "bad_name!.dyn.example.net",
                "--user",
                "alice",
            ],
            "bad_name!",
        ),
        (
            vec!["host", "add", long_label.as_str(), "--user", "alice"],
            "63",
        ),
        (
            vec!["host", "add", long_name.as_str(), "--user", "alice"],
            "at most 253",
        ),
        (
            vec!["host", "add", "taken.dyn.example.net", "--user", "alice"],
            "taken.dyn.example.net",
        ),
        (
            vec!["host", "add", "x.unknown.example", "--user", "alice"],
            "zone",
        ),
        (
            vec!["host", "add", "y.dyn.example.net", "--user", "nobody"],
            "nobody",
        ),
        (vec!["host", "add", ZONE, "--user", "alice"], ZONE),
        (vec!["zone", "add", ZONE, "--ns", "ns1.example.net"], ZONE),
        (
            vec![
                "zone",
                "add",
                "other.example",
                "--ns",
                "ns1.example.net",
                "--ttl",
                "0",
            ],
            "ttl",
        ),
        (vec!["zone", "remove", "missing.example"], "missing.example"),
        (vec!["user", "disable", "nobody"], "nobody"),
        (
            vec!["user", "add", "alice", "--email", "a2@example.org"],
            "alice",
        ),
        (vec!["zone", "export", "missing.example"], "missing.example"),
        (
            vec!["host", "remove", "absent.dyn.example.net"],
            "absent.dyn.example.net",
        ),
    ];
    for (args, needle) in cases {
        let err = scratch.fails(&args);
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "ddserver {args:?}: error does not mention {needle:?}: {err}"
        );
        assert!(
            !err.contains("panicked"),
            "ddserver {args:?} panicked: {err}"
        );
    }
    let after = (
        hosts(&scratch),
        scratch.ok(&["zone", "list"]),
        scratch.ok(&["user", "list"]),
    );
    assert_eq!(before, after, "a refused command changed something");
}

#[test]
fn host_limit_is_enforced() {
    let scratch = scratch_with_zone();
    scratch.ok_stdin(
        &[
            "user",
            "add",
            "bob",
            "--email",
            "bob@example.org",
            "--max-hosts",
            "2",
            "--password-stdin",
        ],
        "bob's password\n",
    );
    for label in ["a", "b"] {
        scratch.ok(&["host", "add", &format!("{label}.{ZONE}"), "--user", "bob"]);
    }
    let err = scratch.fails(&["host", "add", &format!("c.{ZONE}"), "--user", "bob"]);
    assert!(err.contains("limit"), "{err}");
    assert!(!hosts(&scratch).contains(&format!("c.{ZONE}")));
}

#[test]
fn empty_password_on_stdin_is_refused() {
    let scratch = scratch_with_zone();
    let out = scratch.run(
        &[
            "user",
            "add",
            "carol",
            "--email",
            "c@example.org",
            "--password-stdin",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
    assert!(!scratch.ok(&["user", "list"]).contains("carol"));
}

#[test]
fn configuration_errors_exit_2_and_name_the_key() {
    let scratch = Scratch::sqlite("");
    let bad = write_file(
        scratch.dir.path(),
        "bad.toml",
        "[responder]\nlistn = \"127.0.0.1:53\"\n",
    );
    let out = std::process::Command::new(common::ddserver_bin())
        .args(["--config", bad.to_str().unwrap(), "zone", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listn") && err.contains("bad.toml"), "{err}");

    let out = std::process::Command::new(common::ddserver_bin())
        .args(["--config", scratch.config.to_str().unwrap(), "zone", "list"])
        .env("DDSERVER_RESPONDER_WORKRS", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DDSERVER_RESPONDER_WORKRS"));
}

#[test]
fn check_config_redacts_the_database_password() {
    let scratch = Scratch::sqlite("");
    let out = std::process::Command::new(common::ddserver_bin())
        .args(["--config", scratch.config.to_str().unwrap(), "check-config"])
        .env("DDSERVER_DATABASE_URL", "mysql://dd:hunter2@db.example/dd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mysql://dd:***@db.example/dd"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn migrate_is_idempotent() {
    let scratch = Scratch::sqlite("");
    scratch.ok(&["migrate"]);
    scratch.ok(&["migrate"]);
    assert!(scratch.path("dd.db").exists());
}

#[test]
fn zone_import_then_serve_then_sigterm() {
    let scratch = Scratch::sqlite("");
    let zone = write_file(
        scratch.dir.path(),
        "z.zone",
        "$ORIGIN imported.example.\n$TTL 120\n@ IN SOA ns1 hostmaster 5 3600 900 604800 60\n\
         @ IN NS ns1\nns1 IN A 192.0.2.53\nwww IN A 192.0.2.80\nwww IN AAAA 2001:db8::80\n\
         @ IN MX 10 mail.example.org.\n",
    );
    let out = scratch.ok(&["zone", "import", zone.to_str().unwrap()]);
    assert!(out.contains("imported"), "{out}");
    // A broken file is refused without touching the zone.
    let broken = write_file(
        scratch.dir.path(),
        "broken.zone",
        "$ORIGIN imported.example.\n@ IN SOA ns1\n",
    );
    scratch.fails(&["zone", "import", broken.to_str().unwrap()]);

    let mut daemon = scratch.start(&["serve"], "www.imported.example");
    let output = daemon.wait_for_output("ddserver is running");
    assert!(output.contains("administrator account 'admin'"), "{output}");
    assert!(output.contains("password: "), "{output}");
    assert!(
        output.contains(&format!("127.0.0.1:{}", scratch.dns_port)),
        "{output}"
    );
    assert_eq!(
        dig_short(scratch.dns_port, "www.imported.example", "AAAA"),
        ["2001:db8::80"]
    );
    assert_eq!(
        dig_short(scratch.dns_port, "www.imported.example", "A"),
        ["192.0.2.80"]
    );

    // Changes made while it runs are served without a restart.
    scratch.ok(&["user", "add", "dave", "--email", "d@example.org"]);
    scratch.ok(&[
        "host",
        "add",
        "new.imported.example",
        "--user",
        "dave",
        "--ipv4",
        "192.0.2.99",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while dig_short(scratch.dns_port, "new.imported.example", "A") != ["192.0.2.99"] {
        assert!(
            std::time::Instant::now() < deadline,
            "new host not served within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // SIGHUP is taken by every part, never fatal.
    daemon.hangup();
    daemon.wait_for_output("SIGHUP received");
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "{}",
        daemon.output()
    );
    assert_eq!(
        dig_short(scratch.dns_port, "new.imported.example", "A"),
        ["192.0.2.99"]
    );
    let status = daemon.terminate();
    assert!(status.success(), "serve exited with {status} on SIGTERM");

    // A second start does not create another administrator.
    let mut again = scratch.start(&["serve"], "www.imported.example");
    again.wait_for_output("ddserver is running");
    assert!(
        !again.output().contains("administrator account"),
        "{}",
        again.output()
    );
    assert!(again.terminate().success());
}
