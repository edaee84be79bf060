//! `ctid run`: checks everything that can be wrong before starting (settings, directory,
//! TLS files, the store, listening ports), then runs the actix system and the supervision
//! tree until SIGINT/SIGTERM, and stops cleanly.

mod pbx;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ctid_actors::allow::AllowList;
use ctid_actors::ami::{AmiTaps, LinkConfig, LinkStats};
use ctid_actors::announce::Announce;
use ctid_actors::auth::{LoginThrottle, PasswordChecker, ResumeTokens};
use ctid_actors::cluster::remote::Remote;
use ctid_actors::cluster::tokens::SharedTokens;
use ctid_actors::cluster::{Cluster, Notices, Retention};
use ctid_actors::command::Commands;
use ctid_actors::directory::{load_file, DirectoryHandle, DirectoryWatcher, Source, WebDirectory};
use ctid_actors::fagi::FagiAccept;
use ctid_actors::health::Health;
use ctid_actors::http::live::Live;
use ctid_actors::http::{HttpService, HttpShared};
use ctid_actors::info::{InfoAccept, InfoShared};
use ctid_actors::listener::{CtiAccept, TcpService};
use ctid_actors::metrics::{Metrics, Sources};
use ctid_actors::outbox::{Budget, Writers};
use ctid_actors::partition::{Partitions, ReplayLimits};
use ctid_actors::pbx::{Pbx, Pbxes};
use ctid_actors::records::Records;
use ctid_actors::session::{LoginSlots, SessionConfig, SessionRegistry, SessionShared};
use ctid_actors::settings::{
    human_duration, ClusterSettings, Database, Listener, Settings, ThreadSettings,
};
use ctid_actors::supervisor::{
    ChildSpec, Exit, Intensity, Report, Restart, Root, Shutdown, Slot, StartChild,
};
use ctid_actors::tls::{self, CertSlot, CertWatcher, ReloadCert, ServerTls};
use ctid_actors::webi::WebiAccept;
use ctid_proto::directory::Directory;
use futures_util::StreamExt;
use log::{error, info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::TlsAcceptor;

use crate::{logging, settings, EXIT_CONFIG};
use pbx::Wiring;

/// The listening sockets, bound at start-up.
#[derive(Default)]
pub struct Sockets {
    pub fagi: Option<Arc<TcpListener>>,
    pub cti: Option<Arc<TcpListener>>,
    pub ctis: Option<(Arc<TcpListener>, TlsAcceptor)>,
    /// The CTIs certificate, renewed in place.
    pub ctis_cert: Option<Arc<CertSlot>>,
    pub webi: Option<Arc<TcpListener>>,
    pub info: Option<Arc<TcpListener>>,
    pub announce: Option<Arc<UdpSocket>>,
    /// The HTTP API's socket, and its TLS configuration when it has one.
    pub http: Option<(Arc<TcpListener>, Option<Arc<rustls::ServerConfig>>)>,
    /// The HTTP certificate, renewed in place.
    pub http_cert: Option<Arc<CertSlot>>,
}

/// What start-up prepared: checked settings, the directory, bound sockets, TLS.
pub struct Prepared {
    pub settings: Settings,
    /// The settings file, as shown by the console.
    pub config: PathBuf,
    pub directory: Directory,
    /// Where the directory is read again from.
    pub source: Source,
    /// One per PBX.
    pub links: Vec<LinkConfig>,
    pub sockets: Sockets,
}

/// A start-up failure: what to log, and the exit code.
pub struct Refusal(pub String, pub ExitCode);

fn refusal(name: &str, l: &Listener, e: &std::io::Error) -> Refusal {
    let why = ctid_actors::net::io_reason(e);
    Refusal(
        format!("listen.{name}: cannot listen on {}: {why}", l.socket_addr()),
        ExitCode::FAILURE,
    )
}

/// Connections the kernel holds for a listener until it accepts them. The default (128)
/// overflows when thousands of desktops reconnect at once (after a restart): those beyond
/// it wait a second before trying again.
const BACKLOG: i32 = 4096;

fn bind(name: &str, l: &Listener) -> Result<Option<Arc<TcpListener>>, Refusal> {
    if !l.enabled {
        return Ok(None);
    }
    let addr = l.socket_addr();
    let listen = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    listen()
        .map(|s| Some(Arc::new(s)))
        .map_err(|e| refusal(name, l, &e))
}

/// What the settings name, loaded and checked: the directory, each PBX's link, TLS
/// material (of CTIs, of HTTP).
type Loaded = (
    Directory,
    Vec<LinkConfig>,
    Option<ServerTls>,
    Option<ServerTls>,
    Source,
);

/// Loads what the settings name; on failure, every problem, one per item.
fn load(settings: &Settings) -> Result<Loaded, Vec<String>> {
    let d = &settings.directory;
    let directory = match &d.url {
        Some(url) => WebDirectory::new(d, settings.timeouts.socket)
            .map(|web| {
                info!("directory: loading from {url}");
                (Directory::default(), Source::Web(Arc::new(web)))
            })
            .map_err(|e| format!("directory: {e}")),
        None => load_file(&d.path, &settings.pbx_names())
            .map(|dir| (dir, Source::File(d.path.clone())))
            .map_err(|e| format!("directory.path: {e}")),
    };
    let mut problems = Vec::new();
    let links: Vec<LinkConfig> = settings
        .pbxes
        .iter()
        .filter_map(|pbx| {
            LinkConfig::new(pbx, settings.timeouts.socket)
                .map_err(|e| problems.push(format!("{}.tls_ca: {e}", pbx.section)))
                .ok()
        })
        .collect();
    let ctis = &settings.listen.ctis;
    let ctis_tls = match (&ctis.cert, &ctis.key) {
        (Some(cert), Some(key)) if ctis.listener.enabled => tls::server_config(cert, key)
            .map(Some)
            .map_err(|e| format!("listen.ctis: {e}")),
        _ => Ok(None),
    };
    let http = &settings.listen.http;
    let http_tls = match (&http.cert, &http.key) {
        (Some(cert), Some(key)) if http.listener.enabled => tls::server_config(cert, key)
            .map(Some)
            .map_err(|e| format!("listen.http: {e}")),
        _ => Ok(None),
    };
    match (directory, problems.is_empty(), ctis_tls, http_tls) {
        (Ok((d, source)), true, Ok(t), Ok(h)) => Ok((d, links, t, h, source)),
        (d, _, t, h) => {
            problems.extend(d.err());
            problems.extend(t.err());
            problems.extend(h.err());
            Err(problems)
        }
    }
}

/// Checks what the settings name (the directory, TLS files, a PostgreSQL database)
/// without starting anything, and the secrets it would send (a placeholder is a problem
/// for check-config, not for run). A PostgreSQL database is migrated, as start-up would;
/// a SQLite file is left alone, not created.
pub fn check(settings: &Settings) -> Result<(), Vec<String>> {
    let store = &settings.store;
    let mut problems = load(settings).err().unwrap_or_default();
    problems.extend(settings.pbxes.iter().filter_map(|p| p.placeholder_secret()));
    if let (Database::Postgres(_), true) = (&store.database, store.enabled) {
        let migrated = ctid_actors::store::migrate(&store.database);
        problems.extend(
            migrated
                .err()
                .map(|e| format!("{}: {e}", store.database.key())),
        );
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems),
    }
}

/// Checks and prepares everything; nothing runs yet.
pub fn prepare(settings: Settings, config: &Path) -> Result<Prepared, Refusal> {
    let (directory, links, ctis_tls, http_tls, source) =
        load(&settings).map_err(|m| Refusal(m.join("; "), ExitCode::from(EXIT_CONFIG)))?;
    let store = &settings.store;
    if store.enabled {
        ctid_actors::store::migrate(&store.database)
            .map_err(|e| Refusal(format!("{}: {e}", store.database.key()), ExitCode::FAILURE))?;
    }
    let l = &settings.listen;
    let announce = match l.announce.enabled {
        true => Some(Arc::new(
            UdpSocket::bind(l.announce.socket_addr())
                .map_err(|e| refusal("announce", &l.announce, &e))?,
        )),
        false => None,
    };
    let (ctis_config, ctis_cert) = ctis_tls.map(|t| (t.config, t.cert)).unzip();
    let (http_config, http_cert) = http_tls.map(|t| (t.config, t.cert)).unzip();
    let sockets = Sockets {
        fagi: bind("fagi", &l.fagi)?,
        cti: bind("cti", &l.cti)?,
        ctis: bind("ctis", &l.ctis.listener)?.zip(ctis_config.map(TlsAcceptor::from)),
        ctis_cert,
        webi: bind("webi", &l.webi)?,
        info: bind("info", &l.info)?,
        announce,
        http: bind("http", &l.http.listener)?.map(|s| (s, http_config)),
        http_cert,
    };
    Ok(Prepared {
        settings,
        config: config.to_path_buf(),
        directory,
        source,
        links,
        sockets,
    })
}

pub fn run(path: &Path) -> ExitCode {
    let settings = match settings::load(path) {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                error!("{p}");
            }
            error!(
                "{}: {} problem(s); not starting",
                path.display(),
                problems.len()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let prepared = match prepare(settings, path) {
        Ok(p) => p,
        Err(Refusal(why, code)) => {
            error!("{why}; not starting");
            return code;
        }
    };
    info!(
        "ctid {} starting with {}: {} users in {} contexts, context separation {}",
        env!("CARGO_PKG_VERSION"),
        path.display(),
        prepared.directory.users().count(),
        prepared.directory.contexts().count(),
        if prepared.settings.parting.context_separation {
            "on"
        } else {
            "off"
        }
    );
    for pbx in &prepared.settings.pbxes {
        if let Some(why) = pbx.placeholder_secret() {
            error!("{why}");
        }
    }
    let system = actix_rt::System::new();
    let code = system.block_on(serve(prepared));
    actix_rt::System::current().stop();
    code
}

/// The running server.
pub struct Server {
    pub root: Root,
    pub workers: Workers,
    /// Where SIGHUP asks for the certificates (of CTIs, HTTP) to be read again.
    pub certs: Vec<Slot<CertWatcher>>,
}

/// The threads beside the main one (AMI, partitions, sessions) and the call records'
/// writer, to stop once the tree has.
pub struct Workers {
    arbiters: Vec<Arbiter>,
    writers: Writers,
    records: Option<Records>,
    /// How long the writers may take to send their last lines, and the store its last
    /// records, at exit.
    flush: Duration,
}

impl Workers {
    /// Lets session writers and the store finish, then stops the threads.
    pub async fn finish(self) {
        let (left, unwritten) = tokio::join!(self.writers.drained(self.flush), async {
            match &self.records {
                Some(records) => records.drained(self.flush).await,
                None => 0,
            }
        });
        if left > 0 {
            warn!(
                "{left} client(s) did not take their last lines within {}",
                human_duration(self.flush)
            );
        }
        if unwritten > 0 {
            error!(
                "{unwritten} call record write(s) still queued after {}: lost",
                human_duration(self.flush)
            );
        }
        for arbiter in self.arbiters {
            arbiter.stop();
        }
    }
}

/// A listener child: `make` builds the actor from its socket at each (re)start.
fn listener<T, A>(
    name: &'static str,
    socket: Option<T>,
    make: impl Fn(T) -> A + Send + Sync + 'static,
) -> Option<ChildSpec>
where
    T: Clone + Send + Sync + 'static,
    A: Actor<Context = Context<A>> + Handler<Shutdown>,
{
    let socket = socket?;
    Some(ChildSpec::new(
        name,
        Restart::Permanent,
        Slot::new(),
        move |_| make(socket.clone()),
    ))
}

/// Starts the supervision tree on the current actix system (in cluster mode, once the NATS
/// client is set up: it connects, and reconnects, in the background).
pub async fn start(p: Prepared) -> Result<Server, String> {
    let Prepared {
        settings,
        config,
        directory,
        source,
        links,
        sockets,
    } = p;
    let s = &settings.sessions;
    let cluster = match settings.cluster.enabled {
        true => {
            let retention = Retention {
                events: s.replay_events,
                bytes: s.replay_bytes,
                resume_window: s.resume_window,
            };
            info!(
                "cluster: node {} ({}) on NATS {}",
                settings.cluster.node,
                roles(&settings.cluster),
                settings.cluster.nats_url
            );
            Some(Cluster::connect(&settings.cluster, retention).await?)
        }
        false => None,
    };
    let (ingest, edge) = match &cluster {
        Some(_) => (settings.cluster.ingest, settings.cluster.edge),
        None => (true, true),
    };
    let report = Report::default();
    let metrics = Metrics::default();
    let cores = ThreadSettings::count(0);
    let threads = |n| {
        (0..ThreadSettings::count(n))
            .map(|_| Arbiter::new())
            .collect::<Vec<_>>()
    };
    let handles = |arbiters: &[Arbiter]| arbiters.iter().map(Arbiter::handle).collect::<Vec<_>>();
    let (session_threads, partition_threads) = (
        threads(settings.threads.sessions),
        threads(settings.threads.partitions),
    );
    let handle = DirectoryHandle::new(directory);
    let partitions = Partitions::new(
        settings.parting.context_separation,
        ReplayLimits {
            events: s.replay_events,
            bytes: s.replay_bytes,
            stale_after: settings.health.stale_after,
        },
        handle.clone(),
        metrics.clone(),
        handles(&partition_threads),
    );
    let partitions = partitions.with_board(settings.wallboard);
    let partitions = match &cluster {
        Some(c) => partitions.fed_by(c.clone(), settings.cluster.contexts.clone()),
        None => partitions,
    };
    let sessions = SessionRegistry::default();
    let store = settings
        .store
        .enabled
        .then(|| ctid_actors::store::start(&settings.store, &report, &metrics));
    let taps = AmiTaps::default();
    let pbxes = Pbxes::new(settings.pbxes.iter().map(|p| Pbx {
        name: p.name.as_str().into(),
        endpoint: p.ami.endpoint(),
        link: Slot::new(),
        router: Slot::new(),
        stats: LinkStats::default(),
        taps: taps.clone(),
        fagi_from: p.fagi_from.clone(),
        remote: cluster.clone().map(Remote::new),
    }));
    let directory_slot = Slot::<DirectoryWatcher>::new();
    let partitions_slot = Slot::new();
    let writers = Writers::default();
    let shared = Arc::new(SessionShared {
        config: SessionConfig {
            login_timeout: settings.timeouts.login,
            stall: settings.timeouts.socket,
            write_delay: s.write_delay,
            budget: Budget {
                max_bytes: s.outbound_max_bytes,
                max_messages: s.outbound_max_messages,
            },
            max_line: s.max_line_bytes,
        },
        directory: handle.clone(),
        partitions: partitions.clone(),
        checker: PasswordChecker::start(cores.min(2), &report),
        throttle: LoginThrottle::new(settings.timeouts.login),
        tokens: match &cluster {
            Some(c) => ResumeTokens::new(s.resume_window).shared(SharedTokens::new(c.clone())),
            None => ResumeTokens::new(s.resume_window),
        },
        registry: sessions.clone(),
        unauthenticated: LoginSlots::new(s.max_unauthenticated, s.max_unauthenticated_per_address),
        next_id: AtomicU64::new(1),
        pbxes: pbxes.clone(),
        store: store.as_ref().map(|s| s.reader.clone()),
        control: Commands::new(
            pbxes.clone(),
            handle.clone(),
            settings.parting.context_separation,
            settings.timeouts.socket,
            &settings.commands,
            metrics.clone(),
        ),
        writers: writers.clone(),
        metrics: metrics.clone(),
    });

    let watcher = {
        let every = match &source {
            Source::Web(_) => settings.timeouts.update_period,
            Source::File(_) => settings.directory.check_interval,
        };
        let handle = handle.clone();
        let names: Arc<[String]> = settings.pbx_names().into();
        ChildSpec::new(
            "directory",
            Restart::Permanent,
            directory_slot.clone(),
            move |_| DirectoryWatcher::new(source.clone(), names.clone(), every, handle.clone()),
        )
    };
    let partition_specs = match edge {
        true => partitions
            .wanted(&handle.get())
            .iter()
            .map(|k| partitions.spec(k))
            .collect(),
        false => Vec::new(),
    };
    let partition_sup = ChildSpec::supervisor(
        "partitions",
        Intensity::default(),
        partition_specs,
        report.clone(),
        partitions_slot.clone(),
    );
    let (pbx_threads, pbx_sups) = pbx::tree(
        Wiring {
            settings: &settings,
            pbxes: &pbxes,
            directory: &handle,
            partitions: &partitions,
            store: store.as_ref(),
            metrics: &metrics,
            report: &report,
            cluster: cluster.as_ref(),
            ingest,
        },
        links,
    );
    let l = &settings.listen;
    let allow = |name, listener: &Listener| AllowList::new(name, &listener.allow);
    let allows = [
        allow("fagi", &l.fagi),
        allow("cti", &l.cti),
        allow("ctis", &l.ctis.listener),
        allow("webi", &l.webi),
        allow("info", &l.info),
        allow("announce", &l.announce),
        allow("http", &l.http.listener),
    ];
    let warnings = settings.security_warnings();
    for w in &warnings {
        warn!("{w}");
    }
    metrics.watch(Sources {
        pbxes: pbxes.clone(),
        partitions: partitions.clone(),
        sessions: sessions.clone(),
        report: report.clone(),
        directory: handle.clone(),
    });
    let health = Health {
        started: Instant::now(),
        pbxes: pbxes.clone(),
        report: report.clone(),
        records: store.as_ref().map(|s| s.writer.clone()),
        partitions: (cluster.is_some() && edge).then(|| partitions.clone()),
    };
    let info = Arc::new(InfoShared {
        started: health.started,
        config,
        pbxes: pbxes.clone(),
        taps,
        report: report.clone(),
        sessions,
        partitions: partitions.clone(),
        directory: handle.clone(),
        metrics: metrics.clone(),
        log_level: Arc::new(logging::set_level),
        control: l.info_allow_control,
        warnings,
        allow: allows.to_vec(),
    });
    let [fagi_allow, cti_allow, ctis_allow, webi_allow, info_allow, announce_allow, http_allow] =
        allows;
    let handles = handles(&session_threads);
    let timeout = settings.timeouts.socket;
    let Sockets {
        fagi,
        cti,
        ctis,
        ctis_cert,
        webi,
        info: info_socket,
        announce,
        http,
        http_cert,
    } = sockets;
    let (ctis_settings, http_settings) = (&settings.listen.ctis, &settings.listen.http);
    let watched = [
        (
            "ctis",
            "certificates",
            ctis_cert,
            ctis_settings.cert.clone().zip(ctis_settings.key.clone()),
            ctis_settings.check_interval,
        ),
        (
            "http",
            "http-certificates",
            http_cert,
            http_settings.cert.clone().zip(http_settings.key.clone()),
            http_settings.check_interval,
        ),
    ];
    let (certs, cert_watchers): (Vec<_>, Vec<_>) = watched
        .into_iter()
        .filter_map(|(name, child, slot, files, every)| {
            let (slot, (cert, key)) = slot.zip(files)?;
            let watcher = Slot::<CertWatcher>::new();
            let spec = ChildSpec::new(child, Restart::Permanent, watcher.clone(), {
                move |_| CertWatcher::new(name, cert.clone(), key.clone(), slot.clone(), every)
            });
            Some((watcher, spec))
        })
        .unzip();
    let (p, d) = (pbxes.clone(), directory_slot.clone());
    let notices = cluster.clone().map(Notices::new);
    if let Some(notices) = &notices {
        notices.follow(directory_slot.clone());
    }
    // Client listeners are an edge's; every node serves the HTTP probes.
    let (cti, ctis) = match edge {
        true => (cti, ctis),
        false => (None, None),
    };
    let http_shared = Arc::new(HttpShared::new(
        shared.clone(),
        &settings.http.tokens,
        metrics,
        report.clone(),
        settings.listen.http.max_body_bytes,
        http_allow,
        Live {
            health: health.clone(),
            metrics_token: settings.listen.http.metrics_token,
            edge,
        },
    ));
    let http_workers = handles.len();
    let listeners = [
        listener("fagi", fagi, move |socket| {
            TcpService::new("fagi", socket, FagiAccept::new(p.clone(), timeout))
                .with_allow(fagi_allow.clone())
        }),
        listener("cti", cti, {
            let (shared, handles) = (shared.clone(), handles.clone());
            move |socket| {
                TcpService::new(
                    "cti",
                    socket,
                    CtiAccept::new("cti", None, shared.clone(), handles.clone()),
                )
                .with_allow(cti_allow.clone())
            }
        }),
        listener("ctis", ctis, move |(socket, tls)| {
            TcpService::new(
                "ctis",
                socket,
                CtiAccept::new("ctis", Some(tls), shared.clone(), handles.clone()),
            )
            .with_allow(ctis_allow.clone())
        }),
        listener("webi", webi, move |socket| {
            TcpService::new(
                "webi",
                socket,
                WebiAccept::new(d.clone(), timeout, notices.clone()),
            )
            .with_allow(webi_allow.clone())
        }),
        listener("info", info_socket, move |socket| {
            TcpService::new("info", socket, InfoAccept::new(info.clone()))
                .with_allow(info_allow.clone())
        }),
        listener("announce", announce, move |socket| {
            Announce::new(socket, pbxes.clone(), directory_slot.clone())
                .with_allow(announce_allow.clone())
        }),
        listener("http", http, move |(socket, tls)| {
            HttpService::new(socket, tls, http_shared.clone(), http_workers)
        }),
    ];
    let listeners = ChildSpec::supervisor(
        "listeners",
        Intensity::default(),
        listeners
            .into_iter()
            .flatten()
            .chain(cert_watchers)
            .collect(),
        report.clone(),
        Slot::new(),
    );
    let children = [vec![watcher, partition_sup], pbx_sups, vec![listeners]].concat();
    let root = Root::start("ctid", Intensity::default(), children, report);

    // A context added to the directory gets its partition.
    let (added, changes) = (partitions.clone(), handle.changes());
    actix_rt::spawn(changes.for_each(move |dir| {
        let (partitions, slot) = (added.clone(), partitions_slot.clone());
        async move {
            for key in partitions.wanted(&dir) {
                if partitions.slot(&key).is_none() {
                    match slot.get() {
                        Some(sup) => sup.do_send(StartChild(partitions.spec(&key))),
                        None => warn!(
                            "context {key} added, but the partitions supervisor is not running"
                        ),
                    }
                }
            }
        }
    }));
    Ok(Server {
        root,
        certs,
        workers: Workers {
            arbiters: [session_threads, partition_threads, pbx_threads]
                .into_iter()
                .flatten()
                .collect(),
            writers,
            records: store.map(|s| s.writer),
            flush: settings.timeouts.socket,
        },
    })
}

/// The roles of a cluster node, as logged.
fn roles(c: &ClusterSettings) -> &'static str {
    match (c.ingest, c.edge) {
        (true, true) => "ingest and edge",
        (true, false) => "ingest",
        _ => "edge",
    }
}

async fn serve(prepared: Prepared) -> ExitCode {
    let Server {
        root,
        workers,
        certs,
    } = match start(prepared).await {
        Ok(server) => server,
        Err(why) => {
            error!("{why}; not starting");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    until_stopped(root, workers.finish(), certs).await
}

/// Runs until the tree stops on its own or a signal stops it, then `finish`es (cut short by
/// another signal). SIGHUP meanwhile reads the TLS certificates again.
async fn until_stopped(
    root: Root,
    finish: impl std::future::Future<Output = ()>,
    certs: Vec<Slot<CertWatcher>>,
) -> ExitCode {
    let stopper = root.stopper();
    let stopped = root.stopped();
    tokio::pin!(stopped);
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            error!("cannot watch for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let first = loop {
        tokio::select! {
            exit = &mut stopped => break Err(exit),
            _ = term.recv() => break Ok("SIGTERM"),
            _ = int.recv() => break Ok("SIGINT"),
            _ = hup.recv() => {
                let watchers: Vec<_> = certs.iter().filter_map(Slot::get).collect();
                match watchers.is_empty() {
                    true => info!("SIGHUP received: nothing to reload (no TLS listener)"),
                    false => info!("SIGHUP received: reading the TLS certificates again"),
                }
                for watcher in watchers {
                    watcher.do_send(ReloadCert);
                }
            }
        }
    };
    let code = match first {
        Err(exit) => exit_code(exit),
        Ok(signal_name) => {
            info!("{signal_name} received: stopping (send it again to exit at once)");
            if let Some(root) = stopper.get() {
                root.do_send(Shutdown {
                    reason: "ctid is stopping",
                });
            }
            tokio::select! {
                exit = &mut stopped => exit_code(exit),
                _ = term.recv() => return exiting_now(),
                _ = int.recv() => return exiting_now(),
            }
        }
    };
    tokio::select! {
        _ = finish => code,
        _ = term.recv() => exiting_now(),
        _ = int.recv() => exiting_now(),
    }
}

fn exiting_now() -> ExitCode {
    warn!("second signal: exiting now");
    ExitCode::FAILURE
}

fn exit_code(exit: Exit) -> ExitCode {
    match exit {
        Exit::Normal => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        other => {
            error!("supervision tree ended ({other:?}); exiting");
            ExitCode::FAILURE
        }
    }
}
