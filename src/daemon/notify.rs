//! The service manager's readiness protocol (systemd's `sd_notify`): when the daemon is
//! started with `NOTIFY_SOCKET` (a unit with `Type=notify`), it sends `READY=1` once its
//! socket accepts calls and `STOPPING=1` when it begins to shut down, each as one
//! datagram to that socket (a path, or an abstract name written with a leading `@`).
//! Without `NOTIFY_SOCKET` nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable that names the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=value` lines) to the service manager, if one
/// listens; a failure is logged, never fatal.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    if let Err(err) = send(&target, state) {
        tracing::warn!(socket = %target, %err, state, "cannot notify the service manager");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let address = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::send;

    #[test]
    fn a_state_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1\nMAINPID=7").unwrap();
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nMAINPID=7");

        let name = format!("berth-notify-test-{}", std::process::id());
        let address = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = abstract_listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1");
        assert!(send(dir.path().join("nobody").to_str().unwrap(), "READY=1").is_err());
    }
}
