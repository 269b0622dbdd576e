//! `berth serve`: the daemon's life from start to clean shutdown.
//!
//! Start-up: create the directories, take the root, state and socket locks, open the
//! metadata store, replace any stale socket, bind the CRI socket (mode 0660) and serve
//! `RuntimeService` and `ImageService` on it. Shutdown (SIGTERM or SIGINT, or the future
//! given to [`serve`]): stop accepting, let in-flight calls finish for a bounded time,
//! remove the socket, close the store, release the locks.
//!
//! [`client`] is the other end: a gRPC channel to a running daemon's socket, for the
//! CLI commands that go through the daemon, the tests and tools.

pub mod client;
mod lock;
pub mod notify;

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

pub use lock::LockFile;

use crate::config::Config;
use crate::grpc::{AdminApi, AuthorityFix, ImageApi, LogLayer, RuntimeApi};
use crate::proto::admin::admin_server::AdminServer;
use crate::proto::image_service_server::ImageServiceServer;
use crate::proto::runtime_service_server::RuntimeServiceServer;
use crate::server::CriService;
use crate::store::{Store, StoreError};

/// The largest CRI message accepted or sent, as the kubelet's own client allows.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// How long in-flight calls may run on after a shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The name of the lock file in the root and state directories.
const LOCK_FILE: &str = "berth.lock";

/// Why the daemon could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another berth daemon (pid {holder}) holds the {what} lock {path}")]
    Locked {
        what: &'static str,
        path: PathBuf,
        holder: String,
    },
    #[error("cannot take the {what} lock {path}: {source}")]
    Lock {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] crate::error::Error),
    #[error("socket path {path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot listen on [streaming] address {address}: {source}")]
    Streaming {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on [metrics] address {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What the daemon holds while it runs; dropping it closes the store and releases the
/// locks, in that order.
struct Resources {
    store: Arc<Store>,
    _locks: Vec<LockFile>,
}

/// Runs the daemon until `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let resources = prepare(&config)?;
    let service = Arc::new(CriService::new(config.clone(), resources.store.clone())?);
    service.start_events();
    service.recover().await;
    service.watch_live();
    let listener = bind(&config.socket)?;
    let streaming = start_streaming(&config, &service).await?;
    start_metrics(&config, &service).await?;
    tracing::info!(
        socket = %config.socket.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        version = env!("CARGO_PKG_VERSION"),
        "serving CRI"
    );

    // A service manager waiting for us (Type=notify) learns we serve, and later that we
    // stop.
    notify::notify(&format!("READY=1\nMAINPID={}", std::process::id()));
    let shutdown = async move {
        shutdown.await;
        notify::notify("STOPPING=1");
    };
    let result = run_server(listener, service, shutdown).await;
    streaming.abort();
    remove_socket(&config.socket);
    drop(resources);
    tracing::info!("stopped");
    result
}

/// Starts the exec / attach / port-forward server on `[streaming] address`; its URL
/// goes into the responses of the streaming RPCs.
async fn start_streaming(
    config: &Config,
    service: &Arc<CriService>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let address = config.streaming.address;
    let (listener, bound) = crate::streaming::server::bind(address)
        .await
        .map_err(|source| DaemonError::Streaming { address, source })?;
    service.set_streaming_base(format!("http://{bound}"));
    tracing::info!(address = %bound, "streaming server listening");
    let callback = service.clone();
    let serve: crate::streaming::server::Serve = Arc::new(move |request, connection| {
        let service = callback.clone();
        Box::pin(service.serve_stream(request, connection))
    });
    Ok(tokio::spawn(crate::streaming::server::run(
        listener,
        service.stream_tokens(),
        serve,
        std::time::Duration::from_secs(config.streaming.idle_timeout_seconds),
    )))
}

/// Serves the Prometheus metrics on `[metrics] address`, if one is set.
async fn start_metrics(config: &Config, service: &Arc<CriService>) -> Result<(), DaemonError> {
    let Some(address) = config.metrics.address else {
        return Ok(());
    };
    let service = Arc::downgrade(service);
    let snapshot = Arc::new(move || {
        service
            .upgrade()
            .map(|s| s.metrics_snapshot())
            .unwrap_or_default()
    });
    let bound = crate::metrics::serve(address, snapshot)
        .await
        .map_err(|source| DaemonError::Metrics { address, source })?;
    tracing::info!(address = %bound, "metrics served at /metrics");
    Ok(())
}

/// Serves the CRI services on `listener` until `shutdown`, then for at most
/// [`SHUTDOWN_GRACE`] while in-flight calls finish. The service is dropped on return.
async fn run_server(
    listener: UnixListener,
    service: Arc<CriService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityFix::new));
    let runtime = RuntimeServiceServer::new(RuntimeApi::new(service.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let admin = AdminServer::new(AdminApi::new(service.clone()));
    let images = ImageServiceServer::new(ImageApi::new(service))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(LogLayer)
        .add_service(runtime)
        .add_service(images)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, async {
            // Either a stop is sent or the sender is gone: both mean stop.
            let _ = stop_rx.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => Ok(result?),
        () = shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => Ok(result?),
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "calls still running at shutdown were cut off");
                    Ok(())
                }
            }
        }
    }
}

/// Creates the directories, takes the locks and opens the store.
fn prepare(config: &Config) -> Result<Resources, DaemonError> {
    // Both are searchable but not listable by others: the init of a container in a pod
    // with its own user namespace is no host root, and must reach its rootfs and the
    // pod's files by path. What is private in them (the store) is closed on its own.
    create_dir(&config.root, 0o711)?;
    create_dir(&config.state, 0o711)?;
    for dir in [&config.root, &config.state] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(
            |source| DaemonError::CreateDir {
                path: dir.to_path_buf(),
                source,
            },
        )?;
    }
    if let Some(parent) = config.socket.parent() {
        create_dir(parent, 0o711)?;
    }
    let mut socket_lock = config.socket.clone().into_os_string();
    socket_lock.push(".lock");
    let locks = vec![
        LockFile::acquire("root", &config.root.join(LOCK_FILE))?,
        LockFile::acquire("state", &config.state.join(LOCK_FILE))?,
        LockFile::acquire("socket", Path::new(&socket_lock))?,
    ];
    let store = Arc::new(Store::open(&config.root)?);
    Ok(Resources {
        store,
        _locks: locks,
    })
}

/// Creates `path` and its missing parents with `mode`; existing directories are left as
/// they are.
fn create_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| DaemonError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Binds the CRI socket, replacing a stale one left by a daemon that died (we hold the
/// socket lock, so no live daemon serves it), and restricts it to root and its group.
fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(socket = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(|source| DaemonError::Bind {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(DaemonError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    let bind_err = |source| DaemonError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

fn remove_socket(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), %err, "cannot remove socket");
    }
}
