//! Attach: the RPC leaves the request under a token of the streaming server and returns
//! its URL; the client is then served through the container's monitor
//! (`monitor::attach`): output the container writes from then on, the client's stdin,
//! terminal resizes, and the exit. Detaching (the client going away) never stops the
//! container.

use super::CriService;
use crate::error::Result;
use crate::proto::AttachRequest;
use crate::streaming::StreamRequest;
use crate::streaming::attach;
use crate::streaming::connection::{Connection, Options};
use crate::streaming::remotecommand::{self, Outcome};

impl CriService {
    /// Attach: the URL where the client attaches to the container's stdio.
    pub fn attach(&self, request: AttachRequest) -> Result<String> {
        super::check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let record = self.running_container(&request.container_id)?;
        let mut request = request;
        request.container_id = record.id;
        self.stream_url(StreamRequest::Attach(request))
    }

    pub(super) async fn serve_attach(
        &self,
        request: AttachRequest,
        options: Options,
        mut connection: Connection,
    ) {
        let Some(mut streams) =
            attach::open_streams("attach", &request.container_id, options, &mut connection).await
        else {
            return;
        };
        let paths = self.containers.monitor_paths(&request.container_id);
        let socket = attach::attach_monitor(paths, options).await;
        let outcome = match socket {
            Ok(socket) => match attach::bridge(socket, &mut streams, &connection).await {
                // Attach reports success however the container ended.
                Some(Outcome::Exited(_)) => Outcome::Exited(0),
                Some(failed) => failed,
                // The client went away: nothing to tell it.
                None => return,
            },
            Err(e) => Outcome::Failed(format!("cannot attach to the container: {e}")),
        };
        let subject = format!("container {}", request.container_id);
        remotecommand::finish(&streams, &connection, &outcome, &subject).await;
    }
}
