//! The dyndns2 updater against the real update clients from Debian's
//! packages (ddclient 3.10, inadyn 2.10, GNU wget, curl), driven over
//! loopback against `ddserver serve`, each followed by DNS queries (`dig`)
//! to the responder until the new address is served.
//!
//! ddclient 3.10.0 (Debian 12) sends one address per request (its dyndns2
//! code sends only `wantip`, see `nic_dyndns2_update` in /usr/bin/ddclient),
//! so the `myip=v4,v6` form that ddclient 3.11 sends is driven with curl.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SERVED_WITHIN: Duration = Duration::from_secs(5);

fn write_private(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = write_file(dir, name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn ddclient(scratch: &Scratch, name: &str, settings: &str, hosts: &str) -> String {
    let program = require("ddclient", "ddclient");
    let conf = write_private(
        scratch.dir.path(),
        &format!("{name}.conf"),
        &format!(
            "daemon=0\nssl=no\nprotocol=dyndns2\nserver=127.0.0.1:{}\nlogin={USER}\n\
             password='{SECRET}'\n{settings}\n{hosts}\n",
            scratch.updater_port
        ),
    );
    let out = Command::new(program)
        .args(["-daemon=0", "-foreground", "-force", "-verbose", "-file"])
        .arg(&conf)
        .arg("-cache")
        .arg(scratch.path(&format!("{name}.cache")))
        .output()
        .expect("ddclient runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ddclient_one_host_several_hosts_ipv4_and_ipv6() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(3);
    let _daemon = scratch.serve();
    let port = scratch.dns_port;

    let out = ddclient(
        &scratch,
        "one",
        "use=ip, ip=198.51.100.10",
        &format!("h1.{ZONE}"),
    );
    assert!(out.contains("good 198.51.100.10"), "{out}");
    assert!(out.contains("SUCCESS:  updating h1"), "{out}");
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "A",
        &["198.51.100.10"],
        SERVED_WITHIN,
    );

    // Several hosts in one request: one answer line each, in order.
    let out = ddclient(
        &scratch,
        "several",
        "use=ip, ip=198.51.100.11",
        &format!("h1.{ZONE},h2.{ZONE},h3.{ZONE}"),
    );
    assert!(
        out.contains(&format!("hostname=h1.{ZONE},h2.{ZONE},h3.{ZONE}")),
        "ddclient did not group the hosts: {out}"
    );
    assert_eq!(out.matches("good 198.51.100.11").count(), 3, "{out}");
    for h in ["h1", "h2", "h3"] {
        wait_for_answer(
            port,
            &format!("{h}.{ZONE}"),
            "A",
            &["198.51.100.11"],
            SERVED_WITHIN,
        );
    }

    // The same again: nochg, and ddclient reports success.
    let out = ddclient(
        &scratch,
        "again",
        "use=ip, ip=198.51.100.11",
        &format!("h2.{ZONE}"),
    );
    assert!(out.contains("nochg 198.51.100.11"), "{out}");

    // IPv6 alone leaves the A record alone.
    let out = ddclient(
        &scratch,
        "six",
        "use=ip, ip=2001:db8::10",
        &format!("h1.{ZONE}"),
    );
    assert!(out.contains("good 2001:db8::10"), "{out}");
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "AAAA",
        &["2001:db8::10"],
        SERVED_WITHIN,
    );
    assert_eq!(
        dig_short(port, &format!("h1.{ZONE}"), "A"),
        ["198.51.100.11"]
    );
}

#[test]
fn inadyn_one_request_per_host_and_family() {
    let program = require("inadyn", "inadyn");
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(2);
    let _daemon = scratch.serve();
    let port = scratch.dns_port;
    let section = |name: &str, hosts: &str, ip: &str| {
        format!(
            "custom {name} {{\n    ssl = false\n    ddns-server = \"127.0.0.1:{}\"\n    \
             ddns-path = \"/nic/update?hostname=%h&myip=%i\"\n    username = {USER}\n    \
             password = {SECRET}\n    hostname = {hosts}\n    checkip-command = \"echo {ip}\"\n}}\n",
            scratch.updater_port
        )
    };
    let conf = write_private(
        scratch.dir.path(),
        "inadyn.conf",
        &format!(
            "period = 300\nallow-ipv6 = true\n{}{}",
            section(
                "v4",
                &format!("{{ \"h1.{ZONE}\", \"h2.{ZONE}\" }}"),
                "198.51.100.20"
            ),
            section("v6", &format!("\"h1.{ZONE}\""), "2001:db8::20")
        ),
    );
    let cache = scratch.path("inadyn-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let out = Command::new(program)
        .args(["--once", "--foreground", "-l", "debug", "-f"])
        .arg(&conf)
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .expect("inadyn runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // One request per host and family.
    assert_eq!(log.matches("GET /nic/update?hostname=").count(), 3, "{log}");
    assert_eq!(
        log.matches("Successful alias table update").count(),
        3,
        "{log}"
    );
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "A",
        &["198.51.100.20"],
        SERVED_WITHIN,
    );
    wait_for_answer(
        port,
        &format!("h2.{ZONE}"),
        "A",
        &["198.51.100.20"],
        SERVED_WITHIN,
    );
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "AAAA",
        &["2001:db8::20"],
        SERVED_WITHIN,
    );
    // The IPv6 request did not delete h2's (absent) AAAA nor h1's A.
    assert!(dig_short(port, &format!("h2.{ZONE}"), "AAAA").is_empty());
}

#[test]
fn wget_sends_credentials_after_the_401_challenge() {
    let program = require("wget", "wget");
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    let _daemon = scratch.serve();
    let out = Command::new(program)
        .args(["-S", "-O", "-", "--user", USER, "--password", SECRET])
        .arg(format!(
            "{}/nic/update?hostname=h1.{ZONE}&myip=198.51.100.30",
            scratch.updater_url()
        ))
        .output()
        .expect("wget runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    // GNU wget sends nothing until challenged, then repeats the request.
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    assert!(
        stderr
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"ddserver\""),
        "{stderr}"
    );
    // ... on the same keep-alive connection.
    assert!(stderr.contains("Reusing existing connection"), "{stderr}");
    assert_eq!(stdout, "good 198.51.100.30\n");
    wait_for_answer(
        scratch.dns_port,
        &format!("h1.{ZONE}"),
        "A",
        &["198.51.100.30"],
        SERVED_WITHIN,
    );
}

#[test]
fn curl_basic_auth_query_credentials_and_dual_stack() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(2);
    let _daemon = scratch.serve();
    let port = scratch.dns_port;
    let url = scratch.updater_url();
    let auth = format!("{USER}:{SECRET}");

    let reply = curl(
        &["-u", &auth],
        &format!("{url}/nic/update?hostname=h1.{ZONE}&myip=198.51.100.40"),
    );
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "good 198.51.100.40\n")
    );
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "A",
        &["198.51.100.40"],
        SERVED_WITHIN,
    );

    // Credentials in the query string, user name = the host's FQDN, no
    // hostname parameter (taken from the user name).
    let reply = curl(
        &[],
        &format!("{url}/nic/update?username=h2.{ZONE}&password={SECRET}&myip=198.51.100.41"),
    );
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "good 198.51.100.41\n")
    );
    wait_for_answer(
        port,
        &format!("h2.{ZONE}"),
        "A",
        &["198.51.100.41"],
        SERVED_WITHIN,
    );

    // `myip=v4,v6` as ddclient 3.11 sends it: both families in one request.
    let reply = curl(
        &["-u", &auth],
        &format!("{url}/nic/update?hostname=h1.{ZONE}&myip=198.51.100.42,2001:db8::42"),
    );
    assert_eq!(reply.body, "good 198.51.100.42,2001:db8::42\n");
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "A",
        &["198.51.100.42"],
        SERVED_WITHIN,
    );
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "AAAA",
        &["2001:db8::42"],
        SERVED_WITHIN,
    );

    // FRITZ!Box: an IPv6 prefix with its length, which is stripped; the A
    // record stays.
    let reply = curl(
        &["-u", &auth],
        &format!("{url}/nic/update?hostname=h1.{ZONE}&myipv6=2001:db8:1:2::/64"),
    );
    assert_eq!(reply.body, "good 2001:db8:1:2::\n");
    wait_for_answer(
        port,
        &format!("h1.{ZONE}"),
        "AAAA",
        &["2001:db8:1:2::"],
        SERVED_WITHIN,
    );
    assert_eq!(
        dig_short(port, &format!("h1.{ZONE}"), "A"),
        ["198.51.100.42"]
    );

    // POST with a form body (also accepted).
    let reply = curl(
        &[
            "-u",
            &auth,
            "--data",
            &format!("hostname=h2.{ZONE}&myip=198.51.100.43"),
        ],
        &format!("{url}/nic/update"),
    );
    assert_eq!(reply.body, "good 198.51.100.43\n");
    wait_for_answer(
        port,
        &format!("h2.{ZONE}"),
        "A",
        &["198.51.100.43"],
        SERVED_WITHIN,
    );

    // A Unicode host name as the user name (no hostname parameter).
    scratch.ok_stdin(
        &[
            "host",
            "add",
            &format!("bücher.{ZONE}"),
            "--user",
            USER,
            "--password-stdin",
        ],
        &format!("{SECRET}\n"),
    );
    let reply = curl(
        &["-u", &format!("bücher.{ZONE}:{SECRET}")],
        &format!("{url}/nic/update?myip=198.51.100.44"),
    );
    assert_eq!(reply.body, "good 198.51.100.44\n");
    wait_for_answer(
        port,
        &format!("xn--bcher-kva.{ZONE}"),
        "A",
        &["198.51.100.44"],
        SERVED_WITHIN,
    );

    // No address at all: the connection's address (loopback here).
    let reply = curl(&["-u", &auth], &format!("{url}/update?hostname=h2.{ZONE}"));
    assert_eq!(reply.body, "good 127.0.0.1\n");
    wait_for_answer(
        port,
        &format!("h2.{ZONE}"),
        "A",
        &["127.0.0.1"],
        SERVED_WITHIN,
    );
}

/// A new self-signed certificate for 127.0.0.1 and its own key, made by
/// `openssl req`: `SCRATCH/{prefix}cert.pem` and `SCRATCH/{prefix}key.pem`.
fn self_signed(scratch: &Scratch, prefix: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let openssl = require("openssl", "openssl");
    let cert = scratch.path(&format!("{prefix}cert.pem"));
    let key = scratch.path(&format!("{prefix}key.pem"));
    let out = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Starts `ddserver serve` with an https listener on a free port for this
/// pair, plus `extra` `[updater]` settings; returns it and the port.
fn serve_tls(
    scratch: &Scratch,
    cert: &std::path::Path,
    key: &std::path::Path,
    extra: &str,
) -> (Daemon, u16) {
    let tls_port = free_port();
    scratch.updater_settings(&format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    ));
    let daemon = scratch.serve();
    wait_for_tcp(tls_port, Duration::from_secs(10), &daemon);
    (daemon, tls_port)
}

/// Sets h1's address over TLS on `port`, trusting only `ca`: `good`.
fn assert_update_over_tls(ca: &std::path::Path, port: u16, ip: &str) {
    let reply = curl(
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "-u",
            &format!("{USER}:{SECRET}"),
        ],
        &format!("https://127.0.0.1:{port}/nic/update?hostname=h1.{ZONE}&myip={ip}"),
    );
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, format!("good {ip}\n").as_str())
    );
}

/// Whether curl completes `GET /healthz` over TLS on `port` trusting only
/// `ca` (each pair here is self-signed, so this tells which one is served).
fn served_with(ca: &std::path::Path, port: u16) -> bool {
    let out = Command::new(require("curl", "curl"))
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}/healthz"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout) == "200"
}

/// Polls `what` for up to 10 s.
fn eventually(what: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A renewed certificate is served after SIGHUP (systemd's `reload`),
/// with no restart; a pair whose key does not match is refused and the one
/// in service stays. With `tls_check_interval = 0` nothing is loaded
/// without the signal.
#[test]
fn a_renewed_certificate_is_served_after_sighup_and_a_broken_pair_is_refused() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    let (cert, key) = self_signed(&scratch, "");
    let first = scratch.path("first-cert.pem");
    std::fs::copy(&cert, &first).unwrap();
    let (renewed_cert, renewed_key) = self_signed(&scratch, "renewed-");
    let (other_cert, _) = self_signed(&scratch, "other-");
    let (mut daemon, tls_port) = serve_tls(&scratch, &cert, &key, "tls_check_interval = 0");
    assert!(served_with(&first, tls_port), "{}", daemon.output());

    // Renewed in place: nothing changes until the signal.
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(served_with(&first, tls_port));
    assert!(!served_with(&renewed_cert, tls_port));
    daemon.hangup();
    assert!(
        eventually(|| served_with(&renewed_cert, tls_port)),
        "the renewed certificate is not served after SIGHUP:\n{}",
        daemon.output()
    );
    assert!(!served_with(&first, tls_port));
    assert_eq!(
        metric_at(&scratch.updater_url(), "ddserver_updater_tls_reloads_total"),
        1.0
    );

    // A certificate without its key: refused, the renewed pair stays.
    std::fs::copy(&other_cert, &cert).unwrap();
    daemon.hangup();
    assert!(
        eventually(|| metric_at(
            &scratch.updater_url(),
            "ddserver_updater_tls_reload_failures_total"
        ) == 1.0),
        "{}",
        daemon.output()
    );
    assert!(served_with(&renewed_cert, tls_port));
    assert!(!served_with(&other_cert, tls_port));
    wait_for_output(
        &daemon,
        "the previous certificate stays in service",
        Duration::from_secs(10),
    );
    // Updates still work over it, and the signals did not stop the service.
    assert_update_over_tls(&renewed_cert, tls_port, "198.51.100.51");
    assert!(daemon.terminate().success(), "{}", daemon.output());
}

/// certbot's layout: `live/` links that a renewal points at new files in
/// `archive/`. The updater notices at its next check, with no signal.
#[test]
fn a_renewed_certificate_is_served_without_a_signal() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    let (first_cert, first_key) = self_signed(&scratch, "archive-1-");
    let (renewed_cert, renewed_key) = self_signed(&scratch, "archive-2-");
    let (cert, key) = (scratch.path("live-cert.pem"), scratch.path("live-key.pem"));
    std::os::unix::fs::symlink(&first_cert, &cert).unwrap();
    std::os::unix::fs::symlink(&first_key, &key).unwrap();
    let (daemon, tls_port) = serve_tls(&scratch, &cert, &key, "tls_check_interval = 1");
    assert!(served_with(&first_cert, tls_port), "{}", daemon.output());
    // Each link replaced at once, as certbot does (a new link renamed over
    // the old one).
    for (link, target) in [(&key, &renewed_key), (&cert, &renewed_cert)] {
        let fresh = link.with_extension("new");
        std::os::unix::fs::symlink(target, &fresh).unwrap();
        std::fs::rename(&fresh, link).unwrap();
    }
    assert!(
        eventually(|| served_with(&renewed_cert, tls_port)),
        "the renewed certificate is not served:\n{}",
        daemon.output()
    );
    assert!(!served_with(&first_cert, tls_port));
    assert_eq!(
        metric_at(&scratch.updater_url(), "ddserver_updater_tls_reloads_total"),
        1.0
    );
    assert_eq!(
        metric_at(
            &scratch.updater_url(),
            "ddserver_updater_tls_reload_failures_total"
        ),
        0.0
    );
}

#[test]
fn curl_over_tls_with_a_self_signed_certificate() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    let (cert, key) = self_signed(&scratch, "");
    let (daemon, tls_port) = serve_tls(&scratch, &cert, &key, "");
    // The start-up message names the https listener.
    wait_for_output(
        &daemon,
        &format!("https://127.0.0.1:{tls_port}"),
        Duration::from_secs(10),
    );
    assert_update_over_tls(&cert, tls_port, "198.51.100.50");
    wait_for_answer(
        scratch.dns_port,
        &format!("h1.{ZONE}"),
        "A",
        &["198.51.100.50"],
        SERVED_WITHIN,
    );
    // A client that names the server by IP address in SNI (OpenSSL's
    // s_client here, as wrk and some routers' TLS stacks do) is served,
    // and writes nothing to the log: one warning per handshake would let
    // any client flood it.
    let out = Command::new(require("openssl", "openssl"))
        .args(["s_client", "-connect", &format!("127.0.0.1:{tls_port}")])
        .args([
            "-servername",
            "127.0.0.1",
            "-CAfile",
            cert.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    let log = daemon.output();
    assert!(!log.contains("WARN"), "{log}");
    // Without the CA, curl refuses: the certificate is really checked.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{tls_port}/healthz"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
}
