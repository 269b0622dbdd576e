//! The streaming server behind `Exec`, `Attach` and `PortForward` (`kubectl exec -ti`,
//! `kubectl attach`, `kubectl port-forward`, `crictl exec -it`).
//!
//! In progress (issue 7). Built so far:
//! - [`tokens`]: the one-time tokens of the URLs the RPCs return;
//! - [`spdy`]: SPDY/3.1 frames and header compression, and the server side of a SPDY
//!   connection (streams opened by the client, answered, routed, closed), as the
//!   Kubernetes clients speak it.
//!
//! Still to come: the HTTP server and its upgrade to SPDY or WebSocket, the
//! `channel.k8s.io` and `portforward.k8s.io` protocols, exec through the OCI runtime,
//! attach through the container's monitor (`monitor::attach`), and port-forward into the
//! pod's network namespace.

pub mod spdy;
pub mod tokens;
