//! The systemd contract against real parts: `sd_notify` datagrams on real
//! sockets, the shipped unit through `systemd-analyze verify`, and signals delivered by `kill`
//! to a child process.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plantwatch::runtime::signals::{Signal, Signals};
use plantwatch::runtime::systemd::{Notify, monotonic_usec, notify, notify_to, watchdog_interval};

use crate::harness::{bin, repo};

/// Upper bound for anything a test waits on.
const LIMIT: Duration = Duration::from_secs(20);

/// Set on the child processes this file spawns; the `#[ignore]`d child tests do nothing without
/// it, so `cargo test -- --ignored` cannot hang on them.
const CHILD_ENV: &str = "PLANTWATCH_IT_SYSTEMD_CHILD";

/// A receiving socket standing in for systemd's, in its own temp dir.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Manager {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(LIMIT)).unwrap();
        Self {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next datagram, as text.
    fn next(&self) -> String {
        recv_text(&self.socket)
    }
}

fn recv_text(socket: &UnixDatagram) -> String {
    let mut buf = [0_u8; 8192];
    let n = socket.recv(&mut buf).expect("a datagram within the limit");
    String::from_utf8(buf[..n].to_vec()).expect("UTF-8 datagram")
}

/// A Linux abstract socket with a name no other test (or test run) uses.
fn bind_abstract() -> (UnixDatagram, String) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "plantwatch-it-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    (socket, format!("@{name}"))
}

#[test]
fn each_state_is_its_documented_line() {
    let m = Manager::bind();
    let cases = [
        (Notify::Ready, "READY=1"),
        (Notify::Stopping, "STOPPING=1"),
        (Notify::Watchdog, "WATCHDOG=1"),
        (
            Notify::Status("3/3 devices online, outbox 0".into()),
            "STATUS=3/3 devices online, outbox 0",
        ),
    ];
    for (state, want) in cases {
        notify_to(m.path.as_os_str(), &[state]).unwrap();
        assert_eq!(m.next(), want);
    }
}

#[test]
fn reloading_carries_the_monotonic_time_it_was_sent() {
    let m = Manager::bind();
    let before = monotonic_usec();
    notify_to(m.path.as_os_str(), &[Notify::Reloading]).unwrap();
    let after = monotonic_usec();

    let msg = m.next();
    let usec = msg
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("unexpected datagram {msg:?}"));
    assert!(usec.bytes().all(|b| b.is_ascii_digit()), "{msg:?}");
    let usec: u64 = usec.parse().unwrap();
    assert!(
        before <= usec && usec <= after,
        "{before} <= {usec} <= {after}"
    );
}

#[test]
fn several_states_travel_in_one_datagram() {
    let m = Manager::bind();
    notify_to(
        m.path.as_os_str(),
        &[
            Notify::Status("Reload rejected; see the journal.".into()),
            Notify::Ready,
        ],
    )
    .unwrap();
    assert_eq!(
        m.next(),
        "STATUS=Reload rejected; see the journal.\nREADY=1"
    );
    // Nothing else was sent: the next datagram is the next call's.
    notify_to(m.path.as_os_str(), &[Notify::Watchdog]).unwrap();
    assert_eq!(m.next(), "WATCHDOG=1");
}

#[test]
fn abstract_notify_socket_receives_the_datagram() {
    let (socket, name) = bind_abstract();
    notify_to(OsStr::new(&name), &[Notify::Ready]).unwrap();
    assert_eq!(recv_text(&socket), "READY=1");
}

#[test]
fn no_states_send_nothing() {
    let m = Manager::bind();
    notify_to(m.path.as_os_str(), &[]).unwrap();
    notify_to(m.path.as_os_str(), &[Notify::Stopping]).unwrap();
    assert_eq!(m.next(), "STOPPING=1");
}

#[test]
fn an_absent_manager_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nobody-listens");
    assert!(notify_to(gone.as_os_str(), &[Notify::Ready]).is_err());
    let relative = notify_to(OsStr::new("notify"), &[Notify::Ready]).unwrap_err();
    assert_eq!(relative.kind(), std::io::ErrorKind::InvalidInput);
}

// ---------------------------------------------------------------------------------------------
// The environment path: `notify()` and `watchdog_interval()` read NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID. Tests must not mutate this process's environment, so a child gets them.
// ---------------------------------------------------------------------------------------------

/// The integration-test binary re-run as `test`, with `CHILD_ENV` set and `envs` added.
fn child_test(test: &str, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    .env_remove("NOTIFY_SOCKET")
    .env_remove("WATCHDOG_USEC")
    .env_remove("WATCHDOG_PID")
    .envs(envs.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Runs a child test to completion, bounded by `LIMIT` through the manager socket's timeouts
/// (the child itself only sends datagrams and prints).
fn run_child(test: &str, envs: &[(&str, &str)]) -> Output {
    let out = child_test(test, envs).output().unwrap();
    assert!(
        out.status.success(),
        "{test} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Child: two notifications through the environment, then what `watchdog_interval` says.
#[test]
#[ignore = "child process of notify_reads_the_environment_and_never_unsets_it"]
fn notify_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    notify(&[Notify::Ready]);
    notify(&[Notify::Status("second".into())]);
    println!("notify-child: watchdog {:?}", watchdog_interval());
}

#[test]
fn notify_reads_the_environment_and_never_unsets_it() {
    let m = Manager::bind();
    let out = run_child(
        "systemd::notify_child",
        &[
            ("NOTIFY_SOCKET", m.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "30000000"),
        ],
    );
    assert_eq!(m.next(), "READY=1");
    // The second call still found NOTIFY_SOCKET (kanidm's unset_env pitfall).
    assert_eq!(m.next(), "STATUS=second");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("notify-child: watchdog Some(15s)"),
        "{stdout}"
    );
}

#[test]
fn notify_via_an_abstract_socket_from_the_environment() {
    let (socket, name) = bind_abstract();
    run_child("systemd::notify_child", &[("NOTIFY_SOCKET", &name)]);
    assert_eq!(recv_text(&socket), "READY=1");
    assert_eq!(recv_text(&socket), "STATUS=second");
}

#[test]
fn without_notify_socket_notify_does_nothing() {
    let out = run_child("systemd::notify_child", &[("WATCHDOG_PID", "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // WATCHDOG_USEC unset (and WATCHDOG_PID names another process): no watchdog.
    assert!(stdout.contains("notify-child: watchdog None"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// The unit file.
// ---------------------------------------------------------------------------------------------

/// `tool --version` runs: the tool is installed.
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The shipped unit with `/usr/bin/plantwatch` pointing at the binary under test, written as
/// `<dir>/plantwatch.service` (verify checks that every Exec*= binary exists).
fn unit_for_verify(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("systemd/plantwatch.service")).unwrap();
    assert!(
        text.contains("/usr/bin/plantwatch "),
        "the unit names /usr/bin/plantwatch"
    );
    let text = text.replace("/usr/bin/plantwatch", bin().to_str().unwrap());
    let path = dir.join("plantwatch.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if !installed("systemd-analyze") {
        crate::harness::skip_without("systemd-analyze", "apt-get install systemd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_verify(dir.path());

    // Our unit alone: every syntax error or unknown setting is reported and fails.
    let own = Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(own.status.success(), "{}", describe(&own));
    assert!(
        own.stdout.is_empty() && own.stderr.is_empty(),
        "not clean: {}",
        describe(&own)
    );

    // With its dependencies (network.target, multi-user.target): nothing about our unit.
    let deps = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(deps.status.success(), "{}", describe(&deps));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&deps.stdout),
        String::from_utf8_lossy(&deps.stderr)
    );
    assert!(!text.contains("plantwatch"), "{}", describe(&deps));
}

#[test]
fn unit_file_keeps_the_contract() {
    let text = std::fs::read_to_string(repo().join("systemd/plantwatch.service")).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "ExecStartPre=/usr/bin/plantwatch check --quiet --config /etc/plantwatch/plantwatch.toml",
        "ExecStart=/usr/bin/plantwatch run --config /etc/plantwatch/plantwatch.toml",
        "ExecReload=/usr/bin/plantwatch check --quiet --config /etc/plantwatch/plantwatch.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=plantwatch",
        "StateDirectory=plantwatch",
        "ConfigurationDirectory=plantwatch",
        "LoadCredential=mqtt-password:/etc/plantwatch/mqtt-password",
        "ProtectSystem=strict",
        "PrivateDevices=no",
        "DeviceAllow=char-ttyS rw",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "SupplementaryGroups=dialout",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
    ] {
        assert!(settings.contains(&want), "missing `{want}`");
    }
    // systemd 252 has no notify-reload; validation must run before the signal.
    assert!(!settings.contains(&"Type=notify-reload"));
    let reloads: Vec<&&str> = settings
        .iter()
        .filter(|l| l.starts_with("ExecReload="))
        .collect();
    assert!(
        reloads[0].contains(" check "),
        "check runs before kill: {reloads:?}"
    );
}

#[test]
fn exec_start_pre_is_a_quiet_check_the_cli_accepts() {
    let text = std::fs::read_to_string(repo().join("systemd/plantwatch.service")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("an ExecStartPre= line");
    let config = repo().join("configs/plantwatch.toml");
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| match w {
            "/usr/bin/plantwatch" => bin().to_str().unwrap().to_owned(),
            "/etc/plantwatch/plantwatch.toml" => config.to_str().unwrap().to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let out = Command::new(&words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{line}: {}", describe(&out));
    assert!(
        out.stdout.is_empty(),
        "--quiet prints nothing: {}",
        describe(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("deprecated"),
        "the unit uses the current grammar: {}",
        describe(&out)
    );
}

#[test]
fn sysusers_and_tmpfiles_snippets_parse() {
    if !installed("systemd-sysusers") || !installed("systemd-tmpfiles") {
        crate::harness::skip_without(
            "systemd-sysusers/systemd-tmpfiles",
            "apt-get install systemd",
        );
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // tmpfiles chowns the state directory to the user sysusers makes, which only root may do;
    // as root sysusers runs for real (into the temporary root) so that tmpfiles finds the user.
    use std::os::unix::fs::MetadataExt as _;
    let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let sysusers = Command::new("systemd-sysusers")
        .args((!as_root).then_some("--dry-run"))
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("systemd/plantwatch.sysusers.conf"))
        .output()
        .unwrap();
    assert!(sysusers.status.success(), "{}", describe(&sysusers));
    let stderr = String::from_utf8_lossy(&sysusers.stderr);
    assert!(
        stderr.contains("Creating user 'plantwatch'"),
        "{}",
        describe(&sysusers)
    );

    if !as_root {
        crate::harness::skip_without("root", "systemd-tmpfiles chowns /var/lib/plantwatch");
        return;
    }
    let tmpfiles = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(repo().join("systemd/plantwatch.tmpfiles.conf"))
        .output()
        .unwrap();
    assert!(tmpfiles.status.success(), "{}", describe(&tmpfiles));
    let password = root.path().join("etc/plantwatch/mqtt-password");
    assert_eq!(std::fs::read(&password).unwrap(), b"", "created empty");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&password).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let state = std::fs::metadata(root.path().join("var/lib/plantwatch")).unwrap();
    assert!(state.is_dir());
    assert_eq!(state.permissions().mode() & 0o777, 0o700);
    assert!(root.path().join("etc/plantwatch/conf.d").is_dir());
}

// ---------------------------------------------------------------------------------------------
// Signals, delivered by `kill` to a child process (signals are process-wide, so not in here).
// ---------------------------------------------------------------------------------------------

/// Child: reports every signal until SIGTERM.
#[test]
#[ignore = "child process of kill_reaches_signals_as_reload_interrupt_terminate"]
fn signal_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut signals = Signals::new().unwrap();
        println!("signal-child: ready");
        loop {
            let signal = tokio::time::timeout(LIMIT, signals.recv())
                .await
                .expect("the parent signals within the limit")
                .expect("the signal stream stays open");
            println!("signal-child: {signal:?}");
            if signal == Signal::Terminate {
                break;
            }
        }
    });
}

/// Kills the child if the test fails half-way, so no process outlives it.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        // Errors only mean the child is already gone, which is the goal.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// The child's stdout lines, read on a thread, so that waiting on them can have a deadline.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until a line ending in `want` arrives (libtest prints its own `test … ` before the
/// child's first line), failing at `deadline` or if the child's stdout closes first.
fn expect_line(rx: &mpsc::Receiver<String>, want: &str, deadline: Instant) {
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.ends_with(want) => return,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no `{want}` ({e}); child printed: {seen:#?}"),
        }
    }
}

/// Waits until the child's stdout closes (it exited), failing at `deadline`.
fn expect_eof(rx: &mpsc::Receiver<String>, deadline: Instant) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("child still running at the deadline"),
        }
    }
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("`kill` (procps) is installed");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

#[test]
fn kill_reaches_signals_as_reload_interrupt_terminate() {
    let deadline = Instant::now() + LIMIT;
    let mut cmd = child_test("systemd::signal_child", &[]);
    let mut child = Reaper(cmd.stderr(Stdio::inherit()).spawn().unwrap());
    let pid = child.0.id();
    let rx = lines(&mut child.0);

    expect_line(&rx, "signal-child: ready", deadline);
    kill("HUP", pid);
    expect_line(&rx, "signal-child: Reload", deadline);
    kill("INT", pid);
    expect_line(&rx, "signal-child: Interrupt", deadline);
    kill("TERM", pid);
    expect_line(&rx, "signal-child: Terminate", deadline);

    expect_eof(&rx, deadline);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child exited with {status}");
}

#[test]
fn signals_outside_a_runtime_is_an_error_not_a_panic() {
    assert!(Signals::new().is_err());
}
