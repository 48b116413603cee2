//! `spawn_app()`: a gateway and a simulator on loopback ports, plus one method per endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use bfl_sim::{SimConfig, Simulator};
use fluxgate::config::{Settings, Sources};
use fluxgate::server;
use fluxgate::state::AppState;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const SIM_KEY: &str = "test-key";

pub struct TestApp {
    pub base: String,
    pub sim: Arc<Simulator>,
    pub sim_addr: SocketAddr,
    pub http: reqwest::Client,
    pub state: AppState,
    /// This gateway's own spool directory, unless a test names another (tests run side by side,
    /// and each gateway clears its spool directory at start-up).
    _spool: tempfile::TempDir,
    stop: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Waits (bounded: at most about 2.5 s) until `ready()` holds; the test then asserts on the state.
pub async fn wait_for(mut ready: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ready() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Sends the shutdown signal once, from wherever it is held.
pub struct Stopper(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);

impl Stopper {
    pub fn stop(&self) {
        if let Some(stop) = self.0.lock().expect("not poisoned").take() {
            let _ = stop.send(());
        }
    }
}

/// The answer to one request, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn error_param(&self) -> Option<&str> {
        self.body["error"]["param"].as_str()
    }
    pub fn error_type(&self) -> Option<&str> {
        self.body["error"]["type"].as_str()
    }
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Settings every test starts from: fast polling against the sped-up simulator.
pub fn test_overrides(sim: SocketAddr) -> Vec<(&'static str, config::Value)> {
    vec![
        ("server.listen", "127.0.0.1:0".into()),
        ("server.drain_delay_ms", 0.into()),
        ("upstream.base_url", format!("http://{sim}").into()),
        ("upstream.keys", vec![SIM_KEY.to_owned()].into()),
        // The simulator's own port: the allow-list matches ports, so no other local port is reached.
        ("upstream.allowed_hosts", sim_hosts(sim.port()).into()),
        ("upstream.allow_http", true.into()),
        ("upstream.first_poll_scale", 0.02.into()),
        ("upstream.poll_interval_ms", 20.into()),
        ("upstream.retry_base_ms", 5.into()),
        ("upstream.not_found_grace_ms", 2000.into()),
    ]
}

/// `127.0.0.1` and `localhost` at `port`, as allow-list entries.
pub fn sim_hosts(port: u16) -> Vec<String> {
    vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")]
}

pub async fn spawn_app() -> TestApp {
    spawn_with(SimConfig { time_scale: 0.02, ..SimConfig::default() }, Vec::new()).await
}

/// A gateway with extra setting overrides, against a simulator configured by `sim_config`.
pub async fn spawn_with(sim_config: SimConfig, extra: Vec<(&'static str, config::Value)>) -> TestApp {
    spawn_configured(sim_config, |_| extra).await
}

/// As `spawn_with`, for overrides that depend on the simulator's address (its port, mostly).
pub async fn spawn_configured(
    sim_config: SimConfig,
    extra: impl FnOnce(SocketAddr) -> Vec<(&'static str, config::Value)>,
) -> TestApp {
    spawn_listening(sim_config, |sim, _| extra(sim)).await
}

/// As `spawn_configured`, for overrides that also need the gateway's own address (bound first).
pub async fn spawn_listening(
    sim_config: SimConfig,
    extra: impl FnOnce(SocketAddr, SocketAddr) -> Vec<(&'static str, config::Value)>,
) -> TestApp {
    let sim = Simulator::new(sim_config);
    let sim_addr = sim.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("simulator binds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("gateway binds");
    let addr = listener.local_addr().expect("bound address");
    let spool = tempfile::tempdir().expect("spool dir");
    let mut overrides = test_overrides(sim_addr);
    overrides.push(("uploads.spool_dir", spool.path().to_string_lossy().into_owned().into()));
    overrides.extend(extra(sim_addr, addr));
    // Open, as before client keys, unless the test configures some; usage in memory.
    if !overrides.iter().any(|(k, _)| *k == "server.api_keys" || *k == "server.auth") {
        overrides.push(("server.auth", "none".into()));
    }
    if !overrides.iter().any(|(k, _)| *k == "usage.path") {
        overrides.push(("usage.path", "".into()));
    }
    let settings =
        Settings::load(Sources { overrides, ..Sources::default() }).expect("test settings are valid");
    let state = fluxgate::startup::build(settings.clone()).expect("state builds");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = state.clone();
    let server = tokio::spawn(async move {
        let _ = server::serve(listener, serving, async {
            let _ = stopped.await;
        })
        .await;
    });
    TestApp {
        base: format!("http://{addr}"),
        sim,
        sim_addr,
        http: reqwest::Client::new(),
        state,
        _spool: spool,
        stop: Arc::new(std::sync::Mutex::new(Some(stop))),
        server: Some(server),
    }
}

impl TestApp {
    /// Sends the shutdown signal (as SIGTERM would) without waiting.
    pub fn begin_shutdown(&mut self) {
        self.stopper().stop();
    }

    /// A handle that sends the shutdown signal from elsewhere (while the app is borrowed).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Sends the shutdown signal and waits until the server has drained and returned.
    pub async fn shutdown(&mut self) {
        self.begin_shutdown();
        if let Some(server) = self.server.take() {
            server.await.expect("server task ends cleanly");
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let response =
            self.http.post(format!("{}{path}", self.base)).json(body).send().await.expect("gateway answers");
        read(response).await
    }

    pub async fn generate(&self, body: Value) -> Reply {
        self.post_json("/v1/images/generations", &body).await
    }

    /// A multipart edit with a Content-Length, as the Python SDK sends it.
    pub async fn edit(&self, parts: Vec<crate::uploads::Part>) -> Reply {
        let body = crate::uploads::multipart(parts);
        let response = self
            .http
            .post(format!("{}/v1/images/edits", self.base))
            .header("content-type", format!("multipart/form-data; boundary={}", crate::uploads::BOUNDARY))
            .body(body)
            .send()
            .await
            .expect("gateway answers");
        read(response).await
    }

    /// The same, streamed in small chunks with no Content-Length, as the Node SDK sends files.
    pub async fn edit_chunked(&self, parts: Vec<crate::uploads::Part>) -> Reply {
        let body = crate::uploads::multipart(parts);
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(997).map(|c| Ok(c.to_vec())).collect();
        let response = self
            .http
            .post(format!("{}/v1/images/edits", self.base))
            .header("content-type", format!("multipart/form-data; boundary={}", crate::uploads::BOUNDARY))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send()
            .await
            .expect("gateway answers");
        read(response).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("gateway answers");
        read(response).await
    }

    /// Downloads a URL the gateway handed out and returns (content-type, width, height).
    pub async fn fetch_image(&self, url: &str) -> (String, u32, u32) {
        let response = self.http.get(url).send().await.expect("image URL answers");
        assert_eq!(response.status(), 200, "image download from {url}");
        let kind = response.headers()["content-type"].to_str().expect("ascii").to_owned();
        let bytes = response.bytes().await.expect("image body");
        let size = imagesize::blob_size(&bytes).expect("a real image");
        (kind, size.width as u32, size.height as u32)
    }

    /// Waits (bounded) until no job, slot or queued request is left in the gateway and no task in
    /// the simulator, then checks the gateway never holds fewer slots than BFL has tasks.
    pub async fn assert_settles(&self) {
        let dispatcher = &self.state.dispatcher;
        for _ in 0..1000 {
            let (slots, jobs, queued) =
                (dispatcher.slots_in_use(), dispatcher.tracker().len(), dispatcher.queued());
            if slots == 0 && jobs == 0 && queued == 0 && self.sim.active_tasks() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "gateway did not settle: {} slots, {} jobs, {} queued; simulator {} active",
            dispatcher.slots_in_use(),
            dispatcher.tracker().len(),
            dispatcher.queued(),
            self.sim.active_tasks()
        );
    }

    /// Where this gateway spools references.
    pub fn spool_dir(&self) -> &std::path::Path {
        self.state.uploads.spool_dir()
    }

    /// Files in the spool directory right now.
    pub fn spool_files(&self) -> usize {
        std::fs::read_dir(self.spool_dir()).expect("spool dir").count()
    }

    /// The gateway's address, `host:port`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The simulator's port (to build URLs on another host name for the same server).
    pub fn sim_port(&self) -> u16 {
        self.sim_addr.port()
    }

    /// The body the simulator received for the last accepted submit.
    pub fn last_submit(&self) -> bfl_sim::Received {
        self.sim.received().pop().expect("the simulator received a submit")
    }
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    Reply { status, headers, body }
}
