//! The streaming server against a client we did not write the protocol library of:
//! `tests/go/streamclient` speaks remotecommand over moby/spdystream as client-go does.

mod common;

use std::time::Duration;

use berth::proto::{AttachRequest, ExecRequest, PortForwardRequest};
use common::world::{container, records, shell, world};

/// What the Go client saw.
#[derive(Debug, serde::Deserialize)]
struct Seen {
    status: u16,
    protocol: String,
    stdout: String,
    stderr: String,
    error: String,
    #[serde(default)]
    stdout_len: usize,
    #[serde(default)]
    failure: Option<String>,
}

async fn client(args: &[String]) -> Seen {
    let program = common::go_program("streamclient");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .expect("the stream client finished in time")
    .expect("run the stream client");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut all = vec!["-url".to_string(), url.to_string()];
    all.extend(extra.iter().map(|s| s.to_string()));
    all
}

#[tokio::test]
async fn attach_over_spdy_like_critest() {
    let mut w = world().await;
    // As critest's attach spec: a shell reading stdin, closed after the first attach.
    let id = w.create(shell("shell", false, true)).await;
    w.start(&id).await;
    let attach = |stdin, tty, stderr| AttachRequest {
        container_id: id.clone(),
        stdin,
        tty,
        stdout: true,
        stderr,
        ..Default::default()
    };
    let url = w
        .client
        .attach(attach(true, false, true))
        .await
        .expect("attach")
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let seen = client(&args(
        &url,
        &[
            "-stdin",
            "-stderr",
            "-input",
            "echo -n hello; echo oops >&2\n",
            "-close-after",
            "1s",
        ],
    ))
    .await;
    assert_eq!(seen.failure, None, "{seen:?}");
    assert_eq!(seen.status, 101);
    assert_eq!(seen.protocol, "v5.channel.k8s.io");
    assert_eq!(seen.stdout, "hello");
    assert_eq!(seen.stderr, "oops\n");
    let status: serde_json::Value = serde_json::from_str(&seen.error).expect("a JSON status");
    assert_eq!(status["status"], "Success");
    let s = w.wait_exited(&id).await.status.unwrap();
    assert_eq!(s.exit_code, 0, "stdin_once ended the shell");
    assert!(
        records(&w.log_path("shell")).iter().any(|r| r.2 == "hello"),
        "attached output is logged too"
    );

    // A token is good once.
    let again = client(&args(&url, &["-stdin"])).await;
    assert_eq!(again.status, 404, "{again:?}");

    // Bad requests.
    let err = w
        .client
        .attach(AttachRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("an exited container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let err = w
        .client
        .attach(AttachRequest {
            container_id: id.clone(),
            tty: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .expect_err("tty with stderr");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn attach_to_a_terminal_with_resize_and_detach() {
    let mut w = world().await;
    let id = w.create(shell("term", true, false)).await;
    w.start(&id).await;
    let url = |w: &mut common::world::World| {
        let mut client = w.client.clone();
        let id = id.clone();
        async move {
            client
                .attach(AttachRequest {
                    container_id: id,
                    stdin: true,
                    stdout: true,
                    tty: true,
                    stderr: false,
                    ..Default::default()
                })
                .await
                .expect("attach")
                .into_inner()
                .url
        }
    };
    // A client that drops the connection: the shell it talked to keeps running, as the
    // next client finds (it still holds the variable the first one set).
    let mark = format!("m{}", &berth::ids::random_id()[..12]);
    let set = format!("MARK={mark}\n");
    let first = url(&mut w).await;
    let gone = client(&args(
        &first,
        &["-stdin", "-tty", "-input", &set, "-hangup", "1s"],
    ))
    .await;
    assert_eq!(gone.status, 101);
    // An older protocol, a resize, and a command that ends the shell.
    let second = url(&mut w).await;
    let seen = client(&args(
        &second,
        &[
            "-stdin",
            "-tty",
            "-protocols",
            "v4.channel.k8s.io",
            "-width",
            "123",
            "-height",
            "45",
            "-input",
            "echo seen-$MARK; stty size; exit 5\n",
            "-close-after",
            "2s",
        ],
    ))
    .await;
    assert_eq!(seen.failure, None, "{seen:?}");
    assert_eq!(seen.protocol, "v4.channel.k8s.io");
    assert!(seen.stdout.contains("45 123"), "{seen:?}");
    // The terminal echoes the command (`seen-$MARK`); only the shell's answer names it.
    assert!(
        seen.stdout.contains(&format!("seen-{mark}")),
        "the same shell after the first client left: {seen:?}"
    );
    let status: serde_json::Value = serde_json::from_str(&seen.error).expect("a JSON status");
    assert_eq!(
        status["status"], "Success",
        "attach reports success: {seen:?}"
    );
    assert_eq!(w.wait_exited(&id).await.status.unwrap().exit_code, 5);
}

/// The URL of an Exec (stdout always on) of `cmd` in container `id`.
fn exec_url(
    w: &common::world::World,
    id: &str,
    cmd: &[&str],
    stdin: bool,
    tty: bool,
    stderr: bool,
) -> impl std::future::Future<Output = String> + use<> {
    let mut client = w.client.clone();
    let request = ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        tty,
        stdout: true,
        stderr,
        ..Default::default()
    };
    async move { client.exec(request).await.expect("exec").into_inner().url }
}

/// The pids in a container's pids cgroup (the world's pod parent is /berth-test).
fn container_pids(id: &str) -> usize {
    std::fs::read_to_string(format!("/sys/fs/cgroup/pids/berth-test/{id}/cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A world whose pod runs a container `app` (`sleep 3600`); the world and its id.
async fn world_with_app() -> (common::world::World, String) {
    let mut w = world().await;
    let id = w.create(container("app", "sleep 3600")).await;
    w.start(&id).await;
    (w, id)
}

#[tokio::test]
async fn exec_over_spdy_keeps_stdout_and_stderr_apart_and_reports_the_exit_code() {
    let (w, id) = world_with_app().await;
    let url = exec_url(
        &w,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
        true,
    )
    .await;
    let seen = client(&args(&url, &["-stderr"])).await;
    assert_eq!(seen.failure, None, "{seen:?}");
    assert_eq!(
        (seen.stdout.as_str(), seen.stderr.as_str()),
        ("out\n", "err\n")
    );
    let status: serde_json::Value = serde_json::from_str(&seen.error).expect("a JSON status");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_over_spdy_pipes_stdin_until_its_end() {
    let (w, id) = world_with_app().await;
    let url = exec_url(&w, &id, &["cat"], true, false, false).await;
    let seen = client(&args(&url, &["-stdin", "-input", "ping\n"])).await;
    assert_eq!(seen.stdout, "ping\n", "{seen:?}");
    let status: serde_json::Value = serde_json::from_str(&seen.error).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn exec_over_spdy_runs_an_interactive_terminal_with_a_resize() {
    let (w, id) = world_with_app().await;
    let url = exec_url(&w, &id, &["sh"], true, true, false).await;
    let seen = client(&args(
        &url,
        &[
            "-stdin",
            "-tty",
            "-width",
            "100",
            "-height",
            "40",
            "-input",
            "tty; stty size; exit\n",
            "-close-after",
            "2s",
        ],
    ))
    .await;
    assert!(seen.stdout.contains("40 100"), "{seen:?}");
    assert!(seen.stdout.contains("/dev/pts/"), "{seen:?}");
}

/// Large volumes both ways go through whole, at the pace of the slower side.
#[tokio::test]
async fn exec_over_spdy_moves_large_volumes_both_ways_whole() {
    let (w, id) = world_with_app().await;
    let url = exec_url(&w, &id, &["cat"], true, false, false).await;
    let seen = client(&args(&url, &["-stdin", "-input-size", "8388608", "-quiet"])).await;
    assert_eq!(seen.failure, None, "{seen:?}");
    assert_eq!(seen.stdout_len, 8 << 20, "{seen:?}");
    let url = exec_url(
        &w,
        &id,
        &["head", "-c", "20000000", "/dev/zero"],
        false,
        false,
        false,
    )
    .await;
    let seen = client(&args(&url, &["-quiet"])).await;
    assert_eq!(seen.stdout_len, 20_000_000, "{seen:?}");
    let status: serde_json::Value = serde_json::from_str(&seen.error).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn exec_over_spdy_of_a_command_that_does_not_exist_says_why_in_the_status() {
    let (w, id) = world_with_app().await;
    let url = exec_url(&w, &id, &["/no/such/binary"], false, false, false).await;
    let seen = client(&args(&url, &[])).await;
    let status: serde_json::Value = serde_json::from_str(&seen.error).expect("a status");
    assert_eq!(status["status"], "Failure", "{seen:?}");
}

#[tokio::test]
async fn an_exec_whose_client_goes_away_is_killed() {
    let (w, id) = world_with_app().await;
    // The init alone at first, so that the count after the hangup says the exec is gone.
    common::wait_for(
        "only the container's init",
        std::time::Duration::from_secs(5),
        || {
            let only_init = container_pids(&id) == 1;
            async move { only_init.then_some(()) }
        },
    )
    .await;
    let url = exec_url(&w, &id, &["sleep", "1000"], false, false, false).await;
    let hangup = tokio::spawn(async move { client(&args(&url, &["-hangup", "1s"])).await });
    // It runs while its client is there: the kill afterwards is the hang-up's doing.
    common::wait_for("the exec to run", Duration::from_secs(10), || async {
        (container_pids(&id) > 1).then_some(())
    })
    .await;
    let gone = hangup.await.expect("the hanging-up client");
    assert_eq!(gone.status, 101);
    common::wait_for(
        "the abandoned exec to be killed",
        Duration::from_secs(10),
        || async { (container_pids(&id) == 1).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_exec_request_without_a_command_or_a_stream_is_refused() {
    let (w, id) = world_with_app().await;
    let mut client_rpc = w.client.clone();
    let err = client_rpc
        .exec(ExecRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("no command");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client_rpc
        .exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            ..Default::default()
        })
        .await
        .expect_err("no stream");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// An exec's files in container `id`'s state directory, where its monitor keeps them.
fn exec_files(w: &common::world::World, id: &str) -> usize {
    let dir = w.daemon.paths().state.join("containers").join(id);
    std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        .count()
}

/// Each exec's monitor removes its files when it ends: one whose client went away (its
/// files seen while it runs), one that ran to its end and one that failed to start.
#[tokio::test]
async fn the_execs_monitors_remove_their_files_when_they_end() {
    let (w, id) = world_with_app().await;
    let url = exec_url(&w, &id, &["sleep", "1000"], false, false, false).await;
    let hangup = tokio::spawn(async move { client(&args(&url, &["-hangup", "1s"])).await });
    common::wait_for(
        "the running exec's files",
        Duration::from_secs(10),
        || async { (exec_files(&w, &id) > 0).then_some(()) },
    )
    .await;
    hangup.await.expect("the hanging-up client");
    for cmd in [&["true"][..], &["/no/such/binary"][..]] {
        let url = exec_url(&w, &id, cmd, false, false, false).await;
        client(&args(&url, &[])).await;
    }
    common::wait_for(
        "the execs' files to go",
        Duration::from_secs(10),
        || async { (exec_files(&w, &id) == 0).then_some(()) },
    )
    .await;
}

/// What the Go port-forward client saw.
#[derive(Debug, serde::Deserialize)]
struct Forwarded {
    status: u16,
    protocol: String,
    replies: Option<Vec<Reply>>,
    #[serde(default)]
    failure: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Reply {
    data: String,
    error: String,
}

async fn forward(w: &common::world::World, port: u16, connections: usize) -> Forwarded {
    let url = w
        .client
        .clone()
        .port_forward(PortForwardRequest {
            pod_sandbox_id: w.sandbox.clone(),
            port: vec![],
        })
        .await
        .expect("port forward")
        .into_inner()
        .url;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(common::go_program("pfclient"))
            .args([
                "-url",
                &url,
                "-port",
                &port.to_string(),
                "-connections",
                &connections.to_string(),
            ])
            .output(),
    )
    .await
    .expect("the port-forward client finished in time")
    .expect("run the port-forward client");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test]
async fn port_forward_over_spdy_to_an_http_server_in_the_pod() {
    let mut w = world().await;
    let server = w
        .create(container(
            "web",
            "mkdir -p /www && echo hello-from-pod > /www/index.html && httpd -f -p 8080 -h /www",
        ))
        .await;
    w.start(&server).await;
    let first = common::wait_for("httpd to answer", Duration::from_secs(20), || async {
        let seen = forward(&w, 8080, 1).await;
        let replies = seen.replies.as_ref()?;
        replies[0].data.contains("hello-from-pod").then_some(seen)
    })
    .await;
    assert_eq!(
        (first.status, first.protocol.as_str()),
        (101, "portforward.k8s.io")
    );

    // Several connections at once over one SPDY connection.
    let seen = forward(&w, 8080, 6).await;
    assert_eq!(seen.failure, None, "{seen:?}");
    let replies = seen.replies.unwrap();
    assert_eq!(replies.len(), 6);
    for reply in &replies {
        assert!(reply.data.starts_with("HTTP/1."), "{reply:?}");
        assert!(reply.data.contains("hello-from-pod"), "{reply:?}");
        assert_eq!(reply.error, "");
    }

    // Nothing listens on port 9: the error stream says so.
    let seen = forward(&w, 9, 1).await;
    let reply = &seen.replies.unwrap()[0];
    assert!(reply.error.contains("error forwarding port 9"), "{reply:?}");
    assert_eq!(reply.data, "");

    // Bad requests.
    let mut rpc = w.client.clone();
    let err = rpc
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "no-such-pod".into(),
            port: vec![],
        })
        .await
        .expect_err("an unknown pod");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = rpc
        .port_forward(PortForwardRequest {
            pod_sandbox_id: w.sandbox.clone(),
            port: vec![70000],
        })
        .await
        .expect_err("a bad port");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let daemon = common::Setup::new()
        .toml("[streaming]\ntoken_ttl_seconds = 1")
        .start()
        .await;
    let mut client = daemon.runtime().await;
    let pod = common::world::run_pod(&mut client, common::world::pod_config("expiry", "")).await;
    let url = client
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![],
        })
        .await
        .expect("port forward")
        .into_inner()
        .url;
    // The wait is the point: the URL's lifetime is one second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let output = tokio::process::Command::new(common::go_program("pfclient"))
        .args(["-url", &url, "-port", "80"])
        .output()
        .await
        .expect("run the port-forward client");
    let seen: Forwarded = serde_json::from_slice(&output.stdout).expect("the client's JSON");
    assert_eq!(seen.status, 404, "{seen:?}");
    common::world::remove_pod(&mut client, &pod).await;
}

/// What the gorilla/websocket client saw.
#[derive(Debug, serde::Deserialize)]
struct OverWebSocket {
    status: u16,
    protocol: String,
    first: String,
    stdout: String,
    stderr: String,
    error: String,
    closed: u16,
    #[serde(default)]
    failure: Option<String>,
}

async fn ws_client(args: &[&str]) -> OverWebSocket {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(common::go_program("wsclient"))
            .args(args)
            .output(),
    )
    .await
    .expect("the websocket client finished in time")
    .expect("run the websocket client");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test]
async fn exec_and_port_forward_over_websocket() {
    let mut w = world().await;
    let id = w
        .create(container(
            "web",
            "mkdir -p /www && echo hello-over-ws > /www/index.html && httpd -f -p 8080 -h /www",
        ))
        .await;
    w.start(&id).await;
    let exec = |cmd: &[&str], stdin: bool, tty: bool, stderr: bool| {
        exec_url(&w, &id, cmd, stdin, tty, stderr)
    };

    // v5, binary: stdin closed with the v5 signal, the exit code in the status.
    let url = exec(
        &["sh", "-c", "cat; echo done >&2; exit 2"],
        true,
        false,
        true,
    )
    .await;
    let seen = ws_client(&["-url", &url, "-input", "abc", "-close-stdin"]).await;
    assert_eq!(seen.failure, None, "{seen:?}");
    assert_eq!(
        (seen.status, seen.protocol.as_str()),
        (101, "v5.channel.k8s.io")
    );
    assert_eq!(
        seen.first, "01",
        "the ready signal: an empty stdout message"
    );
    assert_eq!(
        (seen.stdout.as_str(), seen.stderr.as_str()),
        ("abc", "done\n")
    );
    let status: serde_json::Value = serde_json::from_str(&seen.error).expect("a JSON status");
    assert_eq!(status["details"]["causes"][0]["message"], "2");
    assert_eq!(seen.closed, 1000, "a normal close ends the session");

    // v4 in base64.
    let url = exec(&["echo", "hi"], false, false, false).await;
    let seen = ws_client(&["-url", &url, "-protocols", "v4.base64.channel.k8s.io"]).await;
    assert_eq!(seen.protocol, "v4.base64.channel.k8s.io", "{seen:?}");
    assert_eq!(seen.stdout, "hi\n");

    // A terminal with a resize.
    let url = exec(&["sh", "-c", "sleep 0.5; stty size"], false, true, false).await;
    let seen = ws_client(&["-url", &url, "-width", "77", "-height", "22"]).await;
    assert!(seen.stdout.contains("22 77"), "{seen:?}");

    // An unknown subprotocol is refused.
    let url = exec(&["true"], false, false, false).await;
    let seen = ws_client(&["-url", &url, "-protocols", "v9.channel.k8s.io"]).await;
    assert_eq!(seen.status, 403, "{seen:?}");

    // Port-forward over WebSocket with tokio-tungstenite: the port first on both
    // channels, then the data.
    let reply = common::wait_for("httpd to listen", Duration::from_secs(20), || {
        let mut client = w.client.clone();
        let sandbox = w.sandbox.clone();
        async move {
            let url = client
                .port_forward(PortForwardRequest {
                    pod_sandbox_id: sandbox,
                    port: vec![8080],
                })
                .await
                .ok()?
                .into_inner()
                .url;
            let reply = forward_over_websocket(&url).await;
            reply.contains("hello-over-ws").then_some(reply)
        }
    })
    .await;
    assert!(reply.starts_with("HTTP/1."), "{reply}");
}

/// One request through a port-forward WebSocket; returns what came back on the data
/// channel.
async fn forward_over_websocket(url: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http", "ws", 1);
    let mut request = ws_url.into_client_request().expect("a websocket request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
    let mut data = Vec::new();
    let mut prefixes = 0;
    let mut sent = false;
    while let Some(Ok(message)) = socket.next().await {
        let bytes = match message {
            tokio_tungstenite::tungstenite::Message::Binary(bytes) => bytes,
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => continue,
        };
        let (channel, payload) = bytes.split_first().expect("a channel byte");
        if prefixes < 2 {
            assert_eq!(payload, 8080u16.to_le_bytes(), "the port prefix");
            prefixes += 1;
            if prefixes == 2 && !sent {
                socket
                    .send(tokio_tungstenite::tungstenite::Message::binary(
                        [&[0u8][..], b"GET / HTTP/1.0\r\n\r\n"].concat(),
                    ))
                    .await
                    .expect("send the request");
                sent = true;
            }
            continue;
        }
        if *channel == 0 {
            data.extend_from_slice(payload);
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

#[tokio::test]
async fn idle_streaming_connections_are_closed() {
    let mut w = common::world::world_with("[streaming]\nidle_timeout_seconds = 1").await;
    let id = w.create(container("idle", "sleep 3600")).await;
    w.start(&id).await;
    let rpc = w.client.clone();
    let exec = |seconds: &str| {
        let request = ExecRequest {
            container_id: id.clone(),
            cmd: vec!["sleep".into(), seconds.into()],
            stdout: true,
            ..Default::default()
        };
        let mut rpc = rpc.clone();
        async move { rpc.exec(request).await.expect("exec").into_inner().url }
    };
    // Over WebSocket: the server closes a silent connection, and the exec goes with it.
    let url = exec("1000").await;
    let seen = ws_client(&["-url", &url, "-protocols", "v4.channel.k8s.io"]).await;
    assert_eq!(seen.closed, 1000, "{seen:?}");
    common::wait_for(
        "the idle exec to be killed",
        Duration::from_secs(10),
        || async { (container_pids(&id) == 1).then_some(()) },
    )
    .await;
    // Over SPDY as well (the Go client sends no pings of its own here).
    let url = exec("1001").await;
    let seen = client(&args(&url, &[])).await;
    assert_eq!(seen.status, 101);
    assert_eq!(
        seen.error, "",
        "the connection was closed, not the command finished"
    );
    common::wait_for(
        "the idle exec to be killed",
        Duration::from_secs(10),
        || async { (container_pids(&id) == 1).then_some(()) },
    )
    .await;
}
