//! The `berth` command: `berth serve` runs the daemon, `berth version` prints the version,
//! `berth config default` the default configuration, `berth image import` loads an image.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use berth::config::{Config, LogFormat, Overrides};

/// berth: a Kubernetes container runtime serving the CRI v1 API on a unix socket.
#[derive(Parser)]
#[command(name = "berth", version, arg_required_else_help = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// Configuration file (TOML). Default: /etc/berth/berth.toml, where a missing file
    /// means all defaults; a file named here must exist.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Persistent state directory: metadata store, images [config key: root; default
    /// /var/lib/berth].
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Volatile state directory: bundles, netns pins, monitor files [config key: state;
    /// default /run/berth].
    #[arg(long, global = true, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The CRI unix socket [config key: socket; default /run/berth/berth.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log level or tracing filter, e.g. "debug" or "berth=debug,h2=warn" [config key:
    /// log_level; default info].
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format on stderr [config key: log_format; default text].
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CRI RuntimeService and ImageService on the unix socket until SIGTERM or
    /// SIGINT.
    Serve,
    /// Print berth's version and the CRI API version it serves.
    Version,
    /// Manage images through the running daemon.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// berth's configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration, as a config file.
    Default,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Load an OCI archive (tar) or OCI image layout (directory) into the image store,
    /// without a registry. The daemon reads FILE, so it must be on this node.
    Import {
        /// The archive or layout directory.
        file: PathBuf,
        /// Name the image, when the archive holds one image its index.json does not name.
        #[arg(long, value_name = "REFERENCE")]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!(
                "berth {} (CRI {})",
                env!("CARGO_PKG_VERSION"),
                berth::server::RUNTIME_API_VERSION
            );
            Ok(())
        }
        Command::Serve => serve(cli.global),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", Config::default_file());
            Ok(())
        }
        Command::Image {
            command: ImageCommand::Import { file, name },
        } => import(cli.global, file, name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: GlobalArgs) -> anyhow::Result<Config> {
    let overrides = Overrides {
        root: args.root,
        state: args.state,
        socket: args.socket,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    Ok(Config::load(args.config.as_deref(), overrides)?)
}

fn serve(args: GlobalArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        berth::daemon::serve(config, shutdown).await?;
        Ok(())
    })
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .context("config key `log_level`")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|err| anyhow::anyhow!("cannot set up logging: {err}"))
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

fn import(args: GlobalArgs, file: PathBuf, name: Option<String>) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let path =
        std::path::absolute(&file).with_context(|| format!("cannot resolve {}", file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let channel = berth::daemon::client::connect(&config.socket)
            .await
            .with_context(|| format!("cannot reach berth at {}", config.socket.display()))?;
        let mut admin = berth::proto::admin::admin_client::AdminClient::new(channel);
        let response = admin
            .import_image(berth::proto::admin::ImportImageRequest {
                path: path.display().to_string(),
                name: name.unwrap_or_default(),
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        for image in response.images {
            println!("{} {}", image.id, image.repo_tags.join(" "));
        }
        Ok(())
    })
}
