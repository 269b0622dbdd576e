//! Bringing up a pod's `lo`, in the daemon: one netlink request (RTM_NEWLINK, IFF_UP) from
//! a short-lived thread that enters the pod's network namespace, where the CNI loopback
//! plugin takes a process of its own per pod. The kernel gives `lo` its 127.0.0.1/8 and
//! ::1/128 as it comes up, as it does for the plugin.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const IFF_UP: u32 = 0x1;
/// How long the kernel's answer may take.
const ANSWER_TIMEOUT_SECONDS: i64 = 5;
/// A netlink header (16 bytes) and an `ifinfomsg` (16).
const REQUEST_LEN: usize = 32;

/// Brings `lo` up in the network namespace pinned at `pin`.
pub async fn up(pin: &Path) -> io::Result<()> {
    let namespace = std::fs::File::open(pin)?;
    let (done, result) = tokio::sync::oneshot::channel();
    // Only this thread enters the namespace; it ends right after, so nothing else runs
    // there.
    std::thread::Builder::new()
        .name("berth-lo-up".into())
        .spawn(move || {
            let _ = done.send(up_inside(&namespace));
        })?;
    result
        .await
        .map_err(|_| io::Error::other("the loopback thread ended without an answer"))?
}

/// On this thread: enters `namespace`, then asks the kernel to set `lo` up.
fn up_inside(namespace: &std::fs::File) -> io::Result<()> {
    nix::sched::setns(namespace, CloneFlags::CLONE_NEWNET)?;
    let index = nix::net::if_::if_nametoindex("lo")?;
    let netlink = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // The kernel answers at once; a bound all the same, as a plugin had its timeout.
    nix::sys::socket::setsockopt(
        &netlink,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT_SECONDS, 0),
    )?;
    sendto(
        netlink.as_raw_fd(),
        &set_up_request(index, 1),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut answer = [0u8; 512];
    let n = recv(netlink.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    acknowledged(&answer[..n])
}

/// RTM_NEWLINK for interface `index`: IFF_UP set, no other flag changed; an ACK asked.
fn set_up_request(index: u32, seq: u32) -> [u8; REQUEST_LEN] {
    let mut request = [0u8; REQUEST_LEN];
    request[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    request[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel fills it in. ifinfomsg: family AF_UNSPEC, type 0, then:
    request[20..24].copy_from_slice(&index.to_ne_bytes());
    request[24..28].copy_from_slice(&IFF_UP.to_ne_bytes());
    request[28..32].copy_from_slice(&IFF_UP.to_ne_bytes());
    request
}

/// The kernel's answer: an NLMSG_ERROR whose error is 0 is the ACK.
fn acknowledged(answer: &[u8]) -> io::Result<()> {
    let field = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
    let kind = answer
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes);
    match (kind, field(16).map(i32::from_ne_bytes)) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(errno)) => Err(io::Error::from_raw_os_error(-errno)),
        _ => Err(io::Error::other(
            "no netlink acknowledgement for setting lo up",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_newlink_that_sets_only_up() {
        let request = set_up_request(1, 7);
        assert_eq!(u32::from_ne_bytes(request[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(request[4..6].try_into().unwrap()), 16);
        assert_eq!(u16::from_ne_bytes(request[6..8].try_into().unwrap()), 5);
        assert_eq!(u32::from_ne_bytes(request[8..12].try_into().unwrap()), 7);
        assert_eq!(request[16], 0, "AF_UNSPEC");
        assert_eq!(i32::from_ne_bytes(request[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(request[24..28].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(request[28..32].try_into().unwrap()), 1);
    }

    #[test]
    fn acks_and_errors_are_told_apart() {
        let answer = |errno: i32| {
            let mut a = vec![0u8; 36];
            a[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            a[16..20].copy_from_slice(&errno.to_ne_bytes());
            a
        };
        assert!(acknowledged(&answer(0)).is_ok());
        let err = acknowledged(&answer(-1)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(1));
        assert!(acknowledged(&[0u8; 3]).is_err());
    }

    /// Removes the namespace pin, also when the test fails.
    struct Pin(std::path::PathBuf);

    impl Drop for Pin {
        fn drop(&mut self) {
            let _ = crate::sandbox::netns::remove(&self.0);
        }
    }

    /// As root (as the suite runs): a new namespace's `lo` is down until brought up.
    #[tokio::test]
    async fn a_new_namespaces_lo_comes_up() {
        let dir = tempfile::tempdir().unwrap();
        let pin = Pin(dir.path().join("ns"));
        crate::sandbox::netns::create(&pin.0).unwrap();
        let pin = pin.0.as_path();
        // What `ip` (iproute2, another netlink client) says of the namespace's lo.
        let flags = |pin: &Path| {
            let output = std::process::Command::new("nsenter")
                .arg(format!("--net={}", pin.display()))
                .args(["ip", "-o", "link", "show", "lo"])
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let before = flags(pin);
        up(pin).await.unwrap();
        let after = flags(pin);
        let is_up = |line: &str| {
            line.split(['<', '>'])
                .nth(1)
                .is_some_and(|f| f.split(',').any(|f| f == "UP"))
        };
        assert!(!is_up(&before), "lo starts down: {before}");
        assert!(is_up(&after), "lo is up: {after}");
    }
}
