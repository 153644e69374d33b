//! The command line and the validated configuration built from it.
//!
//! Arguments (and the environment variables that may stand for them) are parsed by clap,
//! then turned into a [`Config`] once, before any file is written or socket bound; anything
//! wrong stops start-up with a message that names the flag, file or field.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use voxgate_core::Catalogue;

/// voxgate: rate limits, quotas and limit increases for AI voice platforms.
#[derive(Debug, Parser)]
#[command(name = "voxgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP API) on the embedded default: in-memory counters and an
    /// embedded SQLite registry under the data directory.
    Serve(ServeArgs),
    /// Validate a catalogue file (or the built-in one) and exit.
    CheckConfig {
        /// The catalogue file to check; the built-in catalogue when omitted.
        #[arg(long, env = "VOXGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Client subcommands: talk to a running server over HTTP (see docs/cli.md).
    #[command(flatten)]
    Client(Box<crate::cli::ClientCommand>),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for the HTTP API.
    #[arg(long, env = "VOXGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Address for the Envoy rate limit service (gRPC `ShouldRateLimit`; see docs/gateway.md).
    #[arg(long, env = "VOXGATE_GRPC_LISTEN", default_value = "127.0.0.1:8081")]
    pub grpc_listen: String,
    /// Catalogue file (TOML: services, tiers, plans). The built-in demo catalogue when omitted.
    #[arg(long, env = "VOXGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the registry database and the admin token live.
    #[arg(long, env = "VOXGATE_DATA_DIR", default_value = "voxgate-data")]
    pub data_dir: PathBuf,
    /// Admin bearer token. When unset, one is generated on first start and kept in
    /// `<data-dir>/admin-token` (mode 0600).
    #[arg(long, env = "VOXGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bearer token the gateway must present on /v1/check and /v1/leases. When unset, those
    /// endpoints are open to anyone who can reach the listen address.
    #[arg(long, env = "VOXGATE_GATEWAY_TOKEN", hide_env_values = true)]
    pub gateway_token: Option<String>,
    /// How often metered usage is written to the registry, in milliseconds. This is what a
    /// `kill -9` can lose.
    #[arg(long, env = "VOXGATE_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// The registry (accounts, apps, plans, requests, audit, usage): the embedded SQLite in the
    /// data directory when omitted, or `postgres://user@host:port/db` shared by many nodes.
    #[arg(long, env = "VOXGATE_REGISTRY")]
    pub registry: Option<String>,
    /// Where counters live: `memory` (this process), `redis://host:port[/db]`, or
    /// `redis+cluster://h1:p1,h2:p2,h3:p3` (shared by every node using the same Redis).
    #[arg(long, env = "VOXGATE_COUNTERS", default_value = "memory")]
    pub counters: String,
    /// Budget for one call to a shared counter store, in milliseconds; past it the service's
    /// `on_store_error` policy decides.
    #[arg(long, env = "VOXGATE_STORE_TIMEOUT_MS", default_value_t = 50)]
    pub store_timeout_ms: u64,
    /// Local-lease mode for hot keys with shared counters: each node spends slices of a
    /// limit reserved in Redis for up to this many milliseconds without a round trip (0: off).
    /// Quotas never overshoot; the rate may, by at most nodes × one slice (docs/distributed.md).
    #[arg(long, env = "VOXGATE_LOCAL_LEASE_MS", default_value_t = 0)]
    pub local_lease_ms: u64,
    /// How many voxgate nodes share the counters: the `local` failure policy gives each node
    /// this share of every limit while the shared store is away.
    #[arg(long, env = "VOXGATE_NODES", default_value_t = 1)]
    pub nodes: u32,
    /// Let webhooks point at loopback, private and link-local addresses (off by default, so an
    /// app key cannot make the server POST into the operator's own network).
    #[arg(long, env = "VOXGATE_ALLOW_PRIVATE_WEBHOOKS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_webhooks: bool,
    /// Do not create the demo account and app on first start (the variable takes 1/0,
    /// true/false, yes/no, on/off).
    #[arg(long, env = "VOXGATE_NO_DEMO", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_demo: bool,
    /// Label decision metrics by app too (`voxgate_app_decisions_total`): one series per app,
    /// service and outcome. Off by default, as it multiplies the series by the number of apps.
    #[arg(long, env = "VOXGATE_METRICS_PER_APP", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_per_app: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub catalogue: Arc<Catalogue>,
    pub catalogue_source: String,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub gateway_token: Option<String>,
    pub flush_interval: Duration,
    pub demo: bool,
    /// `None` for in-memory counters, else the Redis URL.
    pub counters: Option<String>,
    /// `None` for the embedded SQLite registry, else a PostgreSQL URL.
    pub registry: Option<String>,
    /// Local-lease slice length in ms; 0 when off.
    pub local_lease_ms: u64,
    /// Webhooks may target private addresses.
    pub allow_private_webhooks: bool,
    pub store_timeout: Duration,
    pub nodes: u32,
    /// Whether `/metrics` carries per-app series.
    pub metrics_per_app: bool,
}

impl Config {
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Config> {
        let listen: SocketAddr = args
            .listen
            .parse()
            .with_context(|| format!("--listen `{}` is not an address like 127.0.0.1:8080", args.listen))?;
        let grpc_listen: SocketAddr = args.grpc_listen.parse().with_context(|| {
            format!("--grpc-listen `{}` is not an address like 127.0.0.1:8081", args.grpc_listen)
        })?;
        let catalogue = load_catalogue(args.config.as_deref())?;
        let catalogue_source =
            args.config.as_ref().map_or_else(|| "built-in".to_string(), |p| p.display().to_string());
        for (name, token) in [("--admin-token", &args.admin_token), ("--gateway-token", &args.gateway_token)]
        {
            if let Some(t) = token
                && t.len() < 16
            {
                bail!("{name} must be at least 16 characters");
            }
        }
        let counters = match args.counters.as_str() {
            "memory" => None,
            url if url.starts_with("redis://")
                || url.starts_with("redis+cluster://")
                || url.starts_with("redis+unix://") =>
            {
                Some(url.to_string())
            }
            other => bail!("--counters `{other}` must be `memory`, `redis://…` or `redis+cluster://…`"),
        };
        if let Some(url) = &args.registry
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            bail!("--registry `{url}` must be a postgres:// URL (omit it for the embedded SQLite registry)");
        }
        if !(1..=10_000).contains(&args.store_timeout_ms) {
            bail!("--store-timeout-ms must be between 1 and 10000");
        }
        if args.local_lease_ms > 60_000 {
            bail!("--local-lease-ms must be at most 60000");
        }
        if args.local_lease_ms > 0 && counters.is_none() {
            bail!("--local-lease-ms needs shared counters (--counters redis://…)");
        }
        if !(1..=10_000).contains(&args.nodes) {
            bail!("--nodes must be between 1 and 10000");
        }
        if !(10..=60_000).contains(&args.flush_interval_ms) {
            bail!("--flush-interval-ms must be between 10 and 60000");
        }
        Ok(Config {
            listen,
            grpc_listen,
            catalogue: Arc::new(catalogue),
            catalogue_source,
            data_dir: args.data_dir,
            admin_token: args.admin_token,
            gateway_token: args.gateway_token,
            flush_interval: Duration::from_millis(args.flush_interval_ms),
            demo: !args.no_demo,
            counters,
            registry: args.registry,
            local_lease_ms: args.local_lease_ms,
            allow_private_webhooks: args.allow_private_webhooks,
            store_timeout: Duration::from_millis(args.store_timeout_ms),
            nodes: args.nodes,
            metrics_per_app: args.metrics_per_app,
        })
    }

    /// A configuration for tests: built-in catalogue, given data dir, fixed tokens.
    pub fn for_tests(data_dir: &Path) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            grpc_listen: "127.0.0.1:0".parse().expect("valid address"),
            catalogue: Arc::new(Catalogue::builtin()),
            catalogue_source: "built-in".into(),
            data_dir: data_dir.to_owned(),
            admin_token: Some("test-admin-token-0123456789".into()),
            gateway_token: None,
            flush_interval: Duration::from_millis(1000),
            demo: true,
            counters: None,
            registry: None,
            local_lease_ms: 0,
            // Tests deliver to receivers on 127.0.0.1.
            allow_private_webhooks: true,
            store_timeout: Duration::from_millis(50),
            nodes: 1,
            metrics_per_app: false,
        }
    }
}

/// Loads and validates a catalogue file, or the built-in catalogue.
pub fn load_catalogue(path: Option<&Path>) -> anyhow::Result<Catalogue> {
    let Some(path) = path else {
        return Ok(Catalogue::builtin());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read catalogue {}", path.display()))?;
    Catalogue::parse(&text).with_context(|| format!("invalid catalogue {}", path.display()))
}
