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

#[test]
fn curl_over_tls_with_a_self_signed_certificate() {
    let openssl = require("openssl", "openssl");
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    let cert = scratch.path("cert.pem");
    let key = scratch.path("key.pem");
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
    let tls_port = free_port();
    scratch.updater_settings(&format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    ));
    let daemon = scratch.serve();
    wait_for_tcp(tls_port, Duration::from_secs(10), &daemon);
    // The start-up message names the https listener.
    wait_for_output(
        &daemon,
        &format!("https://127.0.0.1:{tls_port}"),
        Duration::from_secs(10),
    );
    let reply = curl(
        &[
            "--cacert",
            cert.to_str().unwrap(),
            "-u",
            &format!("{USER}:{SECRET}"),
        ],
        &format!("https://127.0.0.1:{tls_port}/nic/update?hostname=h1.{ZONE}&myip=198.51.100.50"),
    );
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "good 198.51.100.50\n")
    );
    wait_for_answer(
        scratch.dns_port,
        &format!("h1.{ZONE}"),
        "A",
        &["198.51.100.50"],
        SERVED_WITHIN,
    );
    // Without the CA, curl refuses: the certificate is really checked.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{tls_port}/healthz"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
}
