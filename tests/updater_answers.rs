//! Every dyndns2 answer code of the updater, over real HTTP (curl) against
//! `ddserver serve`, with DNS checks (`dig`) where an answer changes what is
//! served: good, nochg, badauth (with the 401 challenge), notfqdn, nohost,
//! numhost, abuse (disabled host; rate limited with Retry-After), badagent,
//! dnserr; TXT for ACME, offline, wildcard; trusted proxies; the audit log;
//! `/nic/ip`, `/healthz`, `/metrics`; `ddserver updater` alone and its
//! shutdown on SIGTERM. `911` is in `updater_database_down.rs`.

mod common;

use std::time::Duration;

use common::*;

const SERVED_WITHIN: Duration = Duration::from_secs(5);
const AGENT: &str = "updater-test/1.0";

fn update(scratch: &Scratch, auth: Option<&str>, query: &str) -> HttpReply {
    let mut args = vec!["-A", AGENT];
    if let Some(auth) = auth {
        args.extend(["-u", auth]);
    }
    curl(
        &args,
        &format!("{}/nic/update?{query}", scratch.updater_url()),
    )
}

/// `ddserver serve` feeds its own responder the data of its commits, as a
/// control socket feeds a separate responder: with the safety-net poll a
/// minute away, every `good` is served without the follower reading the
/// change log, and `/metrics` counts the changes as applied from pushed
/// data.
#[test]
fn serve_serves_its_own_updates_from_their_data() {
    let metrics_port = free_port();
    let scratch = Scratch::sqlite(&format!(
        "metrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[feed]\npoll_interval_ms = 60000"
    ));
    scratch.dyndns_fixture(1);
    let _daemon = scratch.serve();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let value = |name: &str| -> f64 {
        let body = curl(&[], &metrics).body;
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} is missing from /metrics:\n{body}"))
    };
    let h1 = format!("h1.{ZONE}");
    let auth = format!("{USER}:{SECRET}");
    wait_for_answer(scratch.dns_port, &h1, "A", &[], SERVED_WITHIN);
    let read_before = value("ddserver_feed_entries_read_total");
    for round in 1..=3 {
        let reply = update(
            &scratch,
            Some(&auth),
            &format!("hostname={h1}&myip=10.0.0.{round}"),
        );
        assert_eq!(reply.body, format!("good 10.0.0.{round}\n"));
        let ip = format!("10.0.0.{round}");
        wait_for_answer(scratch.dns_port, &h1, "A", &[&ip], SERVED_WITHIN);
    }
    // The follower counts after it published: wait for the count.
    let deadline = std::time::Instant::now() + SERVED_WITHIN;
    while value("ddserver_feed_pushed_changes_applied_total") < 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pushed changes applied: {}",
            value("ddserver_feed_pushed_changes_applied_total")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        value("ddserver_feed_entries_read_total"),
        read_before,
        "no change-log entry was read for the updates"
    );
}

#[test]
fn every_answer_code() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(4);
    scratch.ok_stdin(
        &[
            "user",
            "add",
            "bob",
            "--email",
            "bob@example.org",
            "--password-stdin",
        ],
        "bobpw\n",
    );
    // Bob's host has the same secret as alice's: still not hers.
    scratch.ok_stdin(
        &[
            "host",
            "add",
            &format!("b1.{ZONE}"),
            "--user",
            "bob",
            "--password-stdin",
        ],
        &format!("{SECRET}\n"),
    );
    scratch.updater_settings(
        "require_user_agent = true\nchanges_per_host = 3\nchanges_refill = 3600\n\
         failed_auth_per_host = 3\nfailed_auth_refill = 3600\nfailed_auth_per_address = 1000",
    );
    let _daemon = scratch.serve();
    let port = scratch.dns_port;
    let auth = format!("{USER}:{SECRET}");
    let auth = Some(auth.as_str());
    let h1 = format!("h1.{ZONE}");

    // badagent: no User-Agent at all (curl -A "" sends none).
    let reply = curl(
        &["-A", "", "-u", &format!("{USER}:{SECRET}")],
        &format!(
            "{}/nic/update?hostname={h1}&myip=192.0.2.1",
            scratch.updater_url()
        ),
    );
    assert_eq!(reply.body, "badagent\n");

    // badauth: no credentials (401 with the challenge), a wrong secret, an
    // unknown host, another user's host: all the same answer.
    let reply = update(&scratch, None, &format!("hostname={h1}&myip=192.0.2.1"));
    assert_eq!((reply.status, reply.body.as_str()), (401, "badauth\n"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"ddserver\", charset=\"UTF-8\"")
    );
    for (who, host) in [
        (format!("{USER}:wrong"), h1.clone()),
        (format!("{USER}:{SECRET}"), format!("nope.{ZONE}")),
        (format!("{USER}:{SECRET}"), format!("b1.{ZONE}")),
    ] {
        let reply = update(
            &scratch,
            Some(&who),
            &format!("hostname={host}&myip=192.0.2.1"),
        );
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (401, "badauth\n"),
            "{host}"
        );
    }

    // good, then nochg (from memory, no write).
    let reply = update(&scratch, auth, &format!("hostname={h1}&myip=192.0.2.1"));
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "good 192.0.2.1\n")
    );
    wait_for_answer(port, &h1, "A", &["192.0.2.1"], SERVED_WITHIN);
    let reply = update(&scratch, auth, &format!("hostname={h1}&myip=192.0.2.1"));
    assert_eq!(reply.body, "nochg 192.0.2.1\n");

    // notfqdn: a single label, garbage, or no hostname and a plain user name.
    assert_eq!(
        update(&scratch, auth, "hostname=nodots&myip=192.0.2.1").body,
        "notfqdn\n"
    );
    assert_eq!(
        update(&scratch, auth, "hostname=a%20b.example&myip=192.0.2.1").body,
        "notfqdn\n"
    );
    assert_eq!(update(&scratch, auth, "myip=192.0.2.1").body, "notfqdn\n");

    // numhost: more than 20 names, answered once.
    let many: Vec<String> = (0..21).map(|i| format!("x{i}.{ZONE}")).collect();
    assert_eq!(
        update(&scratch, auth, &format!("hostname={}", many.join(","))).body,
        "numhost\n"
    );

    // nohost for a name that is not hers (absent or bob's) next to one that
    // is; notfqdn for a bad one; one line each, in request order.
    let reply = update(
        &scratch,
        auth,
        &format!("hostname={h1},nope.{ZONE},b1.{ZONE},bad_name&myip=192.0.2.1"),
    );
    assert_eq!(reply.body, "nochg 192.0.2.1\nnohost\nnohost\nnotfqdn\n");

    // abuse: host disabled by an administrator (no Retry-After); its owner
    // learns it, a stranger still gets badauth.
    let h4 = format!("h4.{ZONE}");
    scratch.ok(&["host", "disable", &h4, "--reason", "spam"]);
    let reply = update(&scratch, auth, &format!("hostname={h4}&myip=192.0.2.4"));
    assert_eq!((reply.status, reply.body.as_str()), (200, "abuse\n"));
    assert_eq!(reply.header("retry-after"), None);
    let reply = update(
        &scratch,
        Some("alice:wrong"),
        &format!("hostname={h4}&myip=192.0.2.4"),
    );
    assert_eq!(reply.body, "badauth\n");
    scratch.ok(&["host", "enable", &h4]);
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h4}&myip=192.0.2.4")).body,
        "good 192.0.2.4\n"
    );

    // abuse: rate limited changes (3 per host here) with Retry-After; an
    // IPv4 and an IPv6 request back to back both pass.
    let h2 = format!("h2.{ZONE}");
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h2}&myip=192.0.2.2")).body,
        "good 192.0.2.2\n"
    );
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h2}&myip=2001:db8::2")).body,
        "good 2001:db8::2\n"
    );
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h2}&myip=192.0.2.22")).body,
        "good 192.0.2.22\n"
    );
    let reply = update(&scratch, auth, &format!("hostname={h2}&myip=192.0.2.23"));
    assert_eq!((reply.status, reply.body.as_str()), (429, "abuse\n"));
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Unchanged refreshes are never limited.
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h2}&myip=192.0.2.22")).body,
        "nochg 192.0.2.22\n"
    );
    wait_for_answer(port, &h2, "A", &["192.0.2.22"], SERVED_WITHIN);
    wait_for_answer(port, &h2, "AAAA", &["2001:db8::2"], SERVED_WITHIN);

    // abuse: failed attempts per host (3 here), then even the right secret
    // waits.
    let h3 = format!("h3.{ZONE}");
    for _ in 0..3 {
        assert_eq!(
            update(&scratch, Some("alice:bad"), &format!("hostname={h3}")).body,
            "badauth\n"
        );
    }
    let reply = update(&scratch, auth, &format!("hostname={h3}&myip=192.0.2.3"));
    assert_eq!((reply.status, reply.body.as_str()), (429, "abuse\n"));
    assert!(reply.header("retry-after").is_some());

    // TXT for ACME DNS-01, then cleared; dnserr for a value out of range.
    let acme = format!("_acme-challenge.{h1}");
    assert_eq!(
        update(&scratch, auth, &format!("hostname={acme}&txt=token-1")).body,
        "good\n"
    );
    wait_for_answer(port, &acme, "TXT", &["\"token-1\""], SERVED_WITHIN);
    let long = "x".repeat(300);
    assert_eq!(
        update(&scratch, auth, &format!("hostname={acme}&txt={long}")).body,
        "dnserr\n"
    );
    assert_eq!(
        update(&scratch, auth, &format!("hostname={acme}&txt=")).body,
        "good\n"
    );
    wait_for_answer(port, &acme, "TXT", &[], SERVED_WITHIN);

    // offline=YES stops resolving; the next update brings it back.
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h1}&offline=YES")).body,
        "good 127.0.0.1\n"
    );
    wait_for_answer(port, &h1, "A", &[], SERVED_WITHIN);
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h1}&myip=192.0.2.1")).body,
        "good 192.0.2.1\n"
    );
    wait_for_answer(port, &h1, "A", &["192.0.2.1"], SERVED_WITHIN);

    // wildcard=ON answers below the host; NOCHG keeps it.
    let h4 = format!("h4.{ZONE}");
    assert_eq!(
        update(
            &scratch,
            auth,
            &format!("hostname={h4}&myip=192.0.2.4&wildcard=ON")
        )
        .body,
        "good 192.0.2.4\n"
    );
    wait_for_answer(
        port,
        &format!("any.{h4}"),
        "A",
        &["192.0.2.4"],
        SERVED_WITHIN,
    );
    assert_eq!(
        update(
            &scratch,
            auth,
            &format!("hostname={h4}&myip=192.0.2.4&wildcard=NOCHG")
        )
        .body,
        "nochg 192.0.2.4\n"
    );

    // A new secret makes the cached verification of the old one useless.
    scratch.ok_stdin(&["host", "secret", &h1, "--password-stdin"], "n3w\n");
    assert_eq!(
        update(&scratch, auth, &format!("hostname={h1}&myip=192.0.2.1")).body,
        "badauth\n"
    );
    assert_eq!(
        update(
            &scratch,
            Some("alice:n3w"),
            &format!("hostname={h1}&myip=192.0.2.1")
        )
        .body,
        "nochg 192.0.2.1\n"
    );

    // The audit log has host, old and new address, client and agent.
    let audit = scratch.ok(&["audit", "--limit", "200"]);
    assert!(
        audit.lines().any(
            |l| l.contains("alice 127.0.0.1 host.update h2.dyn.example.net")
                && l.contains("ipv4=192.0.2.2->192.0.2.2 ipv6=-->2001:db8::2")
                && l.contains(&format!("agent=\"{AGENT}\""))
        ),
        "{audit}"
    );

    // The other endpoints.
    let ip = curl(&[], &format!("{}/nic/ip", scratch.updater_url()));
    assert_eq!(ip.body, "127.0.0.1\n");
    assert_eq!(
        curl(&[], &format!("{}/healthz", scratch.updater_url())).body,
        "ok\n"
    );
    assert_eq!(
        curl(&[], &format!("{}/nope", scratch.updater_url())).status,
        404
    );
    let metrics = curl(&[], &format!("{}/metrics", scratch.updater_url())).body;
    for needle in [
        "ddserver_updater_answers_total{code=\"good\"}",
        "ddserver_updater_answers_total{code=\"badagent\"} 1",
        "ddserver_updater_request_seconds_bucket{le=\"+Inf\"}",
        "ddserver_updater_auth_cache_hits_total",
    ] {
        assert!(metrics.contains(needle), "{needle} not in {metrics}");
    }
    assert!(
        !metrics.contains("ddserver_updater_auth_cache_hits_total 0\n"),
        "{metrics}"
    );
}

#[test]
fn failures_per_address_and_trusted_proxies() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    scratch.updater_settings(
        "trusted_proxies = \"127.0.0.1\"\nfailed_auth_per_address = 3\nfailed_auth_refill = 3600",
    );
    let _daemon = scratch.serve();
    let h1 = format!("h1.{ZONE}");
    let url = scratch.updater_url();
    let from = |ip: &str, auth: &str, query: &str| {
        curl(
            &[
                "-A",
                AGENT,
                "-u",
                auth,
                "-H",
                &format!("X-Forwarded-For: {ip}"),
            ],
            &format!("{url}/nic/update?{query}"),
        )
    };
    // The proxy's header is believed: /nic/ip and the default address.
    let ip = curl(
        &["-H", "Forwarded: for=\"[2001:db8::77]:1234\""],
        &format!("{url}/nic/ip"),
    );
    assert_eq!(ip.body, "2001:db8::77\n");
    assert_eq!(
        from(
            "203.0.113.7",
            &format!("{USER}:{SECRET}"),
            &format!("hostname={h1}")
        )
        .body,
        "good 203.0.113.7\n"
    );
    wait_for_answer(scratch.dns_port, &h1, "A", &["203.0.113.7"], SERVED_WITHIN);
    // Three failures from one client address, then it must wait, even with
    // the right secret; another client is unaffected.
    for _ in 0..3 {
        assert_eq!(
            from("203.0.113.8", "alice:wrong", &format!("hostname={h1}")).body,
            "badauth\n"
        );
    }
    let reply = from(
        "203.0.113.8",
        &format!("{USER}:{SECRET}"),
        &format!("hostname={h1}"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (429, "abuse\n"));
    assert!(reply.header("retry-after").is_some());
    // One request naming several hosts with a wrong secret pays one failure
    // per host, so it cannot buy many argon2 runs for one failure.
    let names = format!("hostname=x1.{ZONE},x2.{ZONE},x3.{ZONE},{h1}");
    assert_eq!(
        from("203.0.113.10", "alice:wrong", &names).body,
        "badauth\n"
    );
    let reply = from(
        "203.0.113.10",
        &format!("{USER}:{SECRET}"),
        &format!("hostname={h1}"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (429, "abuse\n"));
    assert_eq!(
        from(
            "203.0.113.9",
            &format!("{USER}:{SECRET}"),
            &format!("hostname={h1}")
        )
        .body,
        "good 203.0.113.9\n"
    );
}

#[test]
fn the_updater_runs_alone_and_stops_on_sigterm() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    let log = scratch.path("updater.log");
    let child = std::process::Command::new(ddserver_bin())
        .arg("--config")
        .arg(&scratch.config)
        .arg("updater")
        .current_dir(scratch.dir.path())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(scratch.path("daemon.err")).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child,
        log,
        err: scratch.path("daemon.err"),
    };
    wait_for_tcp(scratch.updater_port, Duration::from_secs(30), &daemon);
    wait_for_output(
        &daemon,
        "dyndns2 updater listening on http://127.0.0.1",
        Duration::from_secs(10),
    );
    // SIGHUP (systemd's `reload`) is taken, never fatal.
    daemon.hangup();
    wait_for_output(
        &daemon,
        "SIGHUP received: the updater has no TLS certificate to load",
        Duration::from_secs(10),
    );
    let reply = update(
        &scratch,
        Some(&format!("{USER}:{SECRET}")),
        &format!("hostname=h1.{ZONE}&myip=192.0.2.9"),
    );
    assert_eq!(reply.body, "good 192.0.2.9\n");
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.output());
    // Committed before the answer: the store has it.
    let hosts = scratch.ok(&["host", "list"]);
    assert!(hosts.contains("192.0.2.9"), "{hosts}");
}

/// A request head is held to 16 KiB, so 10,000 open connections cannot
/// pin gigabytes (hyper's own bound is about 400 KB each): more is refused
/// with 431, while the largest real update (20 names of 200 characters,
/// Basic credentials, a User-Agent) is answered.
#[test]
fn request_heads_are_bounded() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    let _daemon = scratch.serve();
    let auth = Some(format!("{USER}:{SECRET}"));
    // Her host, then 19 long names that are nobody's.
    let long: Vec<String> = std::iter::once(format!("h1.{ZONE}"))
        .chain((1..20).map(|i| format!("{i:a<63}.{i:b<63}.{i:c<63}.{ZONE}")))
        .collect();
    let query = format!("hostname={}&myip=192.0.2.9", long.join(","));
    assert!(query.len() > 3900, "{}", query.len());
    let reply = update(&scratch, auth.as_deref(), &query);
    assert_eq!(
        (reply.status, reply.body),
        (200, format!("good 192.0.2.9\n{}", "nohost\n".repeat(19)))
    );

    let filler = format!("X-Filler: {}", "f".repeat(20 * 1024));
    let reply = curl(
        &["-A", AGENT, "-H", &filler],
        &format!("{}/nic/update?hostname=h1.{ZONE}", scratch.updater_url()),
    );
    assert_eq!(reply.status, 431, "{reply:?}");
    // The server goes on.
    let reply = update(
        &scratch,
        auth.as_deref(),
        &format!("hostname=h1.{ZONE}&myip=192.0.2.10"),
    );
    assert_eq!(reply.body, "good 192.0.2.10\n");
}

/// A TCP connection to the updater from `source` (any 127.0.0.0/8
/// address: loopback answers them all).
fn connect_from(source: &str, port: u16) -> std::net::TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let target = format!("127.0.0.1:{port}").parse().unwrap();
        socket.connect(target).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Whether a `/healthz` request on `stream` is answered (a refused
/// connection is closed before it reads anything).
fn answered(mut stream: std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: ddserver\r\n\r\n");
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.ends_with(b"ok\n") {
            break;
        }
    }
    reply.starts_with(b"HTTP/1.1 200")
}

/// `/metrics` counted `count` connections refused for `reason`.
fn assert_refused(metrics: &str, reason: &str, count: u64) {
    let line =
        format!("ddserver_updater_connections_refused_total{{reason=\"{reason}\"}} {count}\n");
    assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
}

/// The log names the refused client (127.0.0.2), the reason, and the fix
/// for an unlisted proxy.
fn assert_refusal_logged(daemon: &Daemon, reason: &str) {
    daemon.wait_for_output(&format!(
        "updater: connection refused: over {reason} (a proxy or load balancer at this \
         address? list it in updater.trusted_proxies) left_out=0 client=127.0.0.2"
    ));
}

/// One client address cannot open new connections faster than
/// `new_connections_per_address` (a burst) and `new_connections_per_second`
/// allow: past its burst the next is closed at once and counted, while
/// other addresses and trusted proxies go on. (127.0.0.1, the harness's own
/// address for its readiness probes and `/metrics`, is trusted here too.)
#[test]
fn new_connections_are_rate_limited_per_client_address() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    scratch.updater_settings(
        "new_connections_per_address = 3\nnew_connections_per_second = 0.001\n\
         trusted_proxies = [\"127.0.0.1\", \"127.0.0.3\"]",
    );
    let daemon = scratch.serve();
    let port = scratch.updater_port;
    // One at a time, each answered and closed: the open limit never bites.
    for _ in 0..3 {
        assert!(answered(connect_from("127.0.0.2", port)));
    }
    assert!(!answered(connect_from("127.0.0.2", port)));
    assert!(answered(connect_from("127.0.0.4", port)));
    for _ in 0..5 {
        assert!(answered(connect_from("127.0.0.3", port)));
    }
    let metrics = curl(&[], &format!("{}/metrics", scratch.updater_url())).body;
    assert_refused(&metrics, "new_connections_per_address", 1);
    assert_refused(&metrics, "max_connections_per_address", 0);
    // The operator learns who was refused and why.
    assert_refusal_logged(&daemon, "new_connections_per_address");
}

/// One client address cannot hold more than `max_connections_per_address`
/// connections: the next is closed at once and counted, other addresses
/// and trusted proxies go on, and a closed connection frees its place.
#[test]
fn connections_are_limited_per_client_address() {
    let scratch = Scratch::sqlite("");
    scratch.dyndns_fixture(1);
    scratch.updater_settings("max_connections_per_address = 2\ntrusted_proxies = \"127.0.0.3\"");
    let daemon = scratch.serve();
    let port = scratch.updater_port;
    // wait_for_tcp's probe has come and gone; hold two from 127.0.0.2.
    let held = [
        connect_from("127.0.0.2", port),
        connect_from("127.0.0.2", port),
    ];
    // Each is served: they are counted once accepted.
    for stream in &held {
        assert!(answered(stream.try_clone().unwrap()));
    }
    assert!(!answered(connect_from("127.0.0.2", port)));
    assert!(answered(connect_from("127.0.0.4", port)));
    let behind_proxy: Vec<_> = (0..4).map(|_| connect_from("127.0.0.3", port)).collect();
    for stream in &behind_proxy {
        assert!(answered(stream.try_clone().unwrap()));
    }
    let metrics = curl(&[], &format!("{}/metrics", scratch.updater_url())).body;
    assert_refused(&metrics, "max_connections_per_address", 1);
    assert_refusal_logged(&daemon, "max_connections_per_address");
    drop(held);
    // The server sees the close when it next reads; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !answered(connect_from("127.0.0.2", port)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the places were not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
