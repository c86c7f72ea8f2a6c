//! `amps serve`: load the configuration, check it is safe to expose, and serve until
//! SIGINT/SIGTERM.

use crate::clock::SystemClock;
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::registry::Registry;
use argh::FromArgs;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The token in the seed's examples: fine on loopback, refused on a network address.
pub const SAMPLE_TOKEN: &str = "changeme123";

/// serve the playlist, the streams and the API
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct Args {
    /// configuration file (default: $AMPS_CONFIG, ./config.yaml, or the bundled default)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// address to bind (overrides server.host and AMPS_HOST)
    #[argh(option)]
    pub host: Option<String>,
    /// port to bind, 0 for any free port (overrides server.port and AMPS_PORT)
    #[argh(option, short = 'p')]
    pub port: Option<u16>,
    /// verbose logging (same as server.debug: true)
    #[argh(switch, short = 'd')]
    pub debug: bool,
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses configurations that would expose channels without real protection.
pub fn check_exposure(host: &str, token: Option<&str>) -> Result<(), String> {
    if is_loopback(host) {
        return Ok(());
    }
    match token {
        None => Err(format!(
            "refusing to serve on {host} without a token: set server.auth_token or AMPS_TOKEN \
             (or bind to 127.0.0.1)"
        )),
        Some(SAMPLE_TOKEN) => Err(format!(
            "refusing to serve on {host} with the sample token {SAMPLE_TOKEN:?}: choose your own \
             in server.auth_token or AMPS_TOKEN"
        )),
        Some(_) => Ok(()),
    }
}

fn init_logging(debug: bool) {
    let default = if debug {
        "amps=debug,info"
    } else {
        "amps=info,warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Reloads the configuration on every SIGHUP (errors are logged; the old config stays).
async fn reload_on_sighup(state: Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; use POST /api/reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received, reloading the configuration");
        let st = state.clone();
        // Reloading reads a file and may touch many channels: off the async workers.
        let _ = tokio::task::spawn_blocking(move || crate::http::api::apply_reload(&st, "SIGHUP"))
            .await;
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let path = crate::config::resolve_path(args.config.as_deref(), &crate::config::process_env);
    let loaded = match crate::config::load(
        path.as_deref(),
        &crate::config::process_env,
        &crate::libav::Catalog::new(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let overrides = crate::reload::Overrides {
        host: args.host,
        port: args.port,
        debug: args.debug,
    };
    let mut config = loaded.config;
    overrides.apply(&mut config);
    init_logging(config.server.debug);
    tracing::info!(config = %loaded.origin, libav = crate::libav::BUILT_AGAINST, "amps {}", env!("CARGO_PKG_VERSION"));
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    for m in super::common::missing_programs(&config) {
        tracing::warn!("{m}");
    }
    let server = config.server.clone();
    let state_file = match &server.state_file {
        Some(p) => match crate::state::StateFile::open(std::path::Path::new(p)) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                eprintln!("{e}");
                return Ok(1);
            }
        },
        None => None,
    };
    if let Err(e) = check_exposure(&server.host, server.auth_token.as_deref()) {
        eprintln!("{e}");
        return Ok(2);
    }
    if server.auth_token.is_none() {
        tracing::warn!("NO TOKEN CONFIGURED: anyone who can reach {}:{} can watch and change channels. Set server.auth_token or AMPS_TOKEN.", server.host, server.port);
    }

    // Before any thread allocates: the allocator settings of a long-running server.
    crate::engine::memory::tune();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("amps-http")
        .build()?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((server.host.as_str(), server.port))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot listen on {}:{}: {e}", server.host, server.port)
            })?;
        let local_addr = listener.local_addr()?;
        let tls = match &server.tls {
            Some(cfg) => {
                Some(crate::http::tls::Certs::load(cfg).map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            None => None,
        };
        let redirect = match server.redirect_http_port {
            Some(port) => Some(
                tokio::net::TcpListener::bind((server.host.as_str(), port))
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "server.redirect_http_port: cannot listen on {}:{port}: {e}",
                            server.host
                        )
                    })?,
            ),
            None => None,
        };
        let registry = Arc::new(Registry::from_config(&config));
        let engine = Engine::new(registry.clone(), config.engine.clone());
        let watcher = engine.watch();
        let clock: crate::clock::SharedClock = Arc::new(SystemClock);
        let scheduler = crate::schedule::Scheduler::new(
            &config.scheduled_streams,
            registry.clone(),
            clock.clone(),
        );
        if let Some(f) = &state_file {
            for problem in f.apply(&registry, &scheduler) {
                tracing::warn!("{problem}");
            }
        }
        let providers = crate::providers::Providers::new(
            &config,
            registry.clone(),
            crate::providers::default_cache_dir(&config, &crate::config::process_env),
            state_file
                .as_ref()
                .map(|f| f.imported())
                .unwrap_or_default(),
            state_file
                .as_ref()
                .map(|f| f.playlists())
                .unwrap_or_default(),
        );
        engine.set_connection_limits(providers.limits());
        let providers_task = tokio::spawn(providers.clone().run(clock.clone()));
        let schedule_task = tokio::spawn(scheduler.clone().run());
        let reloader = Arc::new(crate::reload::Reloader::new(
            path,
            overrides,
            config.clone(),
            Box::new(crate::libav::Catalog::new()),
        ));
        let tokens = Arc::new(crate::tokens::Tokens::new(&server));
        if let Some(f) = &state_file {
            tokens.set_api(f.tokens());
        }
        let hls_lease = crate::tokens::hls_lease(config.engine.hls_segment_secs);
        let state = Arc::new(AppState {
            registry,
            engine: engine.clone(),
            scheduler,
            reloader,
            state_file,
            metrics: Arc::new(
                Metrics::with_engine(engine.clone())
                    .with_tokens(tokens.clone(), hls_lease)
                    .with_providers(providers.clone(), engine.clone()),
            ),
            providers,
            tokens,
            proxies: crate::http::proxy::Trusted::new(&server.trusted_proxies),
            tls: tls.clone(),
            sessions: crate::auth::Sessions::new(
                std::time::Duration::from_secs(30 * 24 * 3600),
                1000,
            ),
            auth_limiter: crate::auth::FailureLimiter::new(
                server.auth_fail_limit,
                Duration::from_secs(server.auth_block_secs),
            ),
            clock,
            local_addr,
            server: server.clone(),
            hdhomerun: config.hdhomerun.clone(),
        });
        announce(&state);
        let discovery_tasks = start_discovery(&state, &config).await;
        let reload_task = tokio::spawn(reload_on_sighup(state.clone()));
        let tls_task = tls.map(|c| tokio::spawn(c.watch()));
        let redirect_task = redirect.map(|l| tokio::spawn(http::redirect_http(l, state.clone())));
        let stop_engine = engine.clone();
        let shutdown = async move {
            shutdown_signal().await;
            // Ending the channels ends the streaming responses, so HTTP can drain.
            stop_engine.shutdown(Duration::from_secs(4)).await;
        };
        http::serve(listener, state, shutdown, Duration::from_secs(3)).await;
        watcher.abort();
        schedule_task.abort();
        providers_task.abort();
        reload_task.abort();
        for t in [tls_task, redirect_task]
            .into_iter()
            .flatten()
            .chain(discovery_tasks)
        {
            t.abort();
        }
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(0)
    });
    // A channel thread stuck in a call libav cannot interrupt (a DNS lookup) must not keep
    // the process alive: give blocking work a moment, then exit anyway.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Starts HDHomeRun discovery and control (`hdhomerun.discovery`) when they are on and
/// have a token to hand out (or need none). A port that cannot be bound (a real
/// HDHomeRun app on this machine) is logged; the server runs without discovery.
async fn start_discovery(
    state: &Arc<AppState>,
    config: &crate::config::Config,
) -> Vec<tokio::task::JoinHandle<()>> {
    let h = &config.hdhomerun;
    let server = &config.server;
    if !h.enabled || !h.discovery.unwrap_or(!is_loopback(&server.host)) {
        return Vec::new();
    }
    let needs_token = server.auth_token.is_some() || !server.tokens.is_empty();
    let token = h.discovery_token.as_ref().and_then(|name| {
        server
            .tokens
            .iter()
            .find(|t| &t.name == name)
            .and_then(|t| t.secret.clone())
    });
    if needs_token && token.is_none() {
        tracing::info!("HDHomeRun discovery is off: its replies would carry a token; name a viewer token for the tuners in hdhomerun.discovery_token to turn it on (docs/CLIENTS.md)");
        return Vec::new();
    }
    let device = Arc::new(crate::http::hdhr_discovery::Device {
        device_id: u32::from_str_radix(&crate::http::hdhr::device_id_of(&state.hdhomerun), 16)
            .unwrap_or(0),
        tuner_count: state.hdhomerun.tuner_count.min(255) as u8,
        scheme: if state.tls.is_some() { "https" } else { "http" },
        http_port: state.local_addr.port(),
        public_url: server.public_url.clone(),
        token_segment: token
            .map(|t| format!("/{}", crate::auth::encode_for_query(&t)))
            .unwrap_or_default(),
        model: crate::http::hdhr::FIRMWARE,
        hwmodel: crate::http::hdhr::model_of(&state.hdhomerun),
        version: crate::http::hdhr::FIRMWARE_VERSION,
        channels: {
            let registry = state.registry.clone();
            Arc::new(move || registry.len())
        },
    });
    let addr = (server.host.as_str(), h.discovery_port);
    let mut tasks = Vec::new();
    match tokio::net::UdpSocket::bind(addr).await {
        Ok(udp) => tasks.push(tokio::spawn(crate::http::hdhr_discovery::serve_udp(
            udp,
            device.clone(),
        ))),
        Err(e) => tracing::warn!(
            port = h.discovery_port,
            "HDHomeRun discovery is off: cannot listen on UDP {}:{}: {e}",
            server.host,
            h.discovery_port
        ),
    }
    match tokio::net::TcpListener::bind(addr).await {
        Ok(tcp) => tasks.push(tokio::spawn(crate::http::hdhr_discovery::serve_tcp(
            tcp, device,
        ))),
        Err(e) => tracing::warn!(
            port = h.discovery_port,
            "HDHomeRun control is off: cannot listen on TCP {}:{}: {e}",
            server.host,
            h.discovery_port
        ),
    }
    if !tasks.is_empty() {
        tracing::info!(
            port = h.discovery_port,
            "answering HDHomeRun discovery (unicast replies only)"
        );
    }
    tasks
}

/// Tells the operator where to point a player. The token is shown only on a terminal;
/// when stdout is a log (Docker, systemd) it is masked.
fn announce(state: &AppState) {
    let base = http::base_url(state, None);
    let shown = match &state.server.auth_token {
        Some(t) if std::io::stdout().is_terminal() => Some(t.clone()),
        Some(_) => Some("***".to_owned()),
        None => None,
    };
    let q = |path: &str| match &shown {
        Some(t) if t == "***" => format!("{base}{path}?token=***"),
        t => format!("{base}{path}{}", crate::auth::token_query(t.as_deref())),
    };
    println!("listening on {}", state.local_addr);
    println!("dashboard: {base}/   (open in a browser; log in with the token)");
    println!("playlist: {}", q("/playlist.m3u"));
    println!("guide:    {}", q("/epg.xml"));
    if state.hdhomerun.enabled {
        let tuner = match &shown {
            Some(t) if t == "***" => format!("{base}/hdhr/***"),
            Some(t) => format!("{base}/hdhr/{}", crate::auth::encode_for_query(t)),
            None => format!("{base}/hdhr"),
        };
        println!("tuner:    {tuner}   (Plex/Jellyfin: add an HDHomeRun tuner at this address)");
    }
    println!("api:      {base}/api/streams");
    println!("metrics:  {base}/metrics");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_rules() {
        assert!(check_exposure("127.0.0.1", None).is_ok());
        assert!(check_exposure("::1", None).is_ok());
        assert!(check_exposure("localhost", Some(SAMPLE_TOKEN)).is_ok());
        assert!(check_exposure("0.0.0.0", None)
            .unwrap_err()
            .contains("without a token"));
        assert!(check_exposure("192.168.1.2", Some(SAMPLE_TOKEN))
            .unwrap_err()
            .contains("sample token"));
        assert!(check_exposure("0.0.0.0", Some("a-long-random-token")).is_ok());
    }
}
