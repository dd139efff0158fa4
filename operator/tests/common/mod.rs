//! Helpers shared by the operator's process-level tests: the shared control plane, fresh
//! namespaces, bounded waits, a tiny HTTP client and a TCP proxy that can cut one client off
//! the API server.

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use pgfleet_testkit::kube::ControlPlane;

/// Pause between two looks while waiting.
pub const POLL: Duration = Duration::from_millis(100);

/// The shared control plane, with pgfleet's CRDs installed.
pub fn cp() -> &'static ControlPlane {
    static CRDS: Once = Once::new();
    let cp = ControlPlane::shared();
    CRDS.call_once(|| cp.apply_yaml(&pgfleet_crds::crds_yaml().expect("CRD YAML")));
    cp
}

/// A kube client from the kubeconfig at `path`.
pub async fn client_from(path: &Path) -> kube::Client {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// A kube client as the control plane's admin. Starting the shared control plane blocks (a
/// while, the first time), so it happens off the runtime's other tasks.
pub async fn admin_client() -> kube::Client {
    let path = tokio::task::block_in_place(|| cp().kubeconfig().to_path_buf());
    client_from(&path).await
}

/// A name unique in this run: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A namespace unique in this run, created on the shared control plane.
pub fn fresh_namespace(prefix: &str) -> String {
    let ns = unique(prefix);
    cp().apply_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    ));
    ns
}

/// Polls `probe` until it returns `Some`, for at most `timeout`; panics naming `what` and
/// adding `context()` (e.g. process logs) to the message.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {:?} waiting for {what}\n{}",
                timeout,
                context()
            );
        }
        thread::sleep(POLL);
    }
}

/// The holder of Lease `namespace/name`, `Some("")` when released, `None` when absent.
pub fn lease_holder(namespace: &str, name: &str) -> Option<String> {
    cp().try_kubectl(&[
        "get",
        "lease",
        name,
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .ok()
}

/// `leaseTransitions` of Lease `namespace/name`.
pub fn lease_transitions(namespace: &str, name: &str) -> i64 {
    let out = cp().kubectl(&[
        "get",
        "lease",
        name,
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.leaseTransitions}",
    ]);
    out.parse().unwrap_or(0)
}

/// Creates PoolerFleet `namespace/name` (one replica).
pub fn create_fleet(namespace: &str, name: &str) {
    cp().apply_yaml(&format!(
        "apiVersion: pgfleet.io/v1alpha1\nkind: PoolerFleet\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n  replicas: 1\n"
    ));
}

/// Whether Deployment `namespace/name` exists.
pub fn deployment_exists(namespace: &str, name: &str) -> bool {
    cp().try_kubectl(&["get", "deployment", name, "-n", namespace, "-o", "name"])
        .is_ok()
}

/// `GET path` on `addr` over HTTP/1.1; returns the status code and body. Bounded by 5 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(5);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample `series` (name plus labels, exactly as rendered) in OpenMetrics
/// `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The admin kubeconfig with its server replaced by `server` (e.g. a proxy in front of the
/// API server), written next to the original; returns its path.
pub fn kubeconfig_via(server: SocketAddr) -> PathBuf {
    let original = cp().kubeconfig();
    let text = std::fs::read_to_string(original).expect("read kubeconfig");
    let rewritten = text.replace(&cp().server_url(), &format!("https://{server}"));
    assert_ne!(
        rewritten,
        text,
        "the kubeconfig names {}",
        cp().server_url()
    );
    let path = original.with_file_name(format!("{}.kubeconfig", unique("via-proxy")));
    std::fs::write(&path, rewritten).expect("write kubeconfig");
    path
}

/// A TCP proxy on a free loopback port forwarding to `upstream` (TLS passes through: the
/// API server's certificate is valid for 127.0.0.1), until [`TcpProxy::cut`] drops every
/// connection and refuses new ones. Cut on drop too.
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream` from a free loopback port.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        TcpProxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream)
    }

    /// Starts forwarding to `upstream` from `listen` (e.g. the address of a proxy cut
    /// earlier, to bring a client's API server back).
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind(listen).expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let cut = cut.clone();
            let streams = streams.clone();
            thread::spawn(move || {
                while !cut.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(server) = TcpStream::connect(upstream) else {
                                continue;
                            };
                            let _ = client.set_nonblocking(false);
                            forward(client, server, &streams);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
                // The listener drops here: new connections are refused.
            })
        };
        TcpProxy {
            addr,
            cut,
            streams,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection and stops accepting.
    pub fn cut(&mut self) {
        self.cut.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in self.streams.lock().expect("streams").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn forward(client: TcpStream, server: TcpStream, streams: &Mutex<Vec<TcpStream>>) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut all = streams.lock().expect("streams");
        for s in [&client, &server] {
            if let Ok(s) = s.try_clone() {
                all.push(s);
            }
        }
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    pipe(client, server2);
    pipe(server, client2);
}

/// The upstream address of the shared control plane's API server.
pub fn apiserver_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cp().port()))
}

/// Last `lines` lines of the file at `path` (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
