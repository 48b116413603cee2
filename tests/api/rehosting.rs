//! Re-hosting (`delivery.store`): the URL a client gets keeps serving the image after BFL's own
//! URL has expired (the simulator's result URLs live one second here), links are signed and
//! expire, names are checked, CORS is answered, and `b64_json` reads the kept copy. The same
//! checks run against a local directory and against a real S3-compatible server (moto, started
//! on loopback: `FLUXGATE_TEST_MOTO=/path/to/moto_server`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bfl_sim::SimConfig;
use fluxgate::delivery::{LinkOrigin, LinkSigner, Wanted};
use fluxgate::job::{OutputFormat, ResponseFormat};
use fluxgate::records::{Finished, ImageName};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_with};

const SIGNING_KEY: &str = "rehosting-test-signing-key";
/// How long the simulator's result URLs live in these tests.
const SIM_URL_TTL: Duration = Duration::from_secs(1);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A gateway re-hosting into `store` (the `delivery.*` overrides), against a simulator whose
/// result URLs expire after `SIM_URL_TTL`.
async fn spawn_rehosting(store: Vec<(&'static str, config::Value)>) -> TestApp {
    let mut overrides = vec![("delivery.signing_key", SIGNING_KEY.into())];
    overrides.extend(store);
    let sim = SimConfig { time_scale: 0.02, result_ttl: SIM_URL_TTL, ..SimConfig::default() };
    spawn_with(sim, overrides).await
}

fn local_store(dir: &tempfile::TempDir) -> Vec<(&'static str, config::Value)> {
    vec![
        ("delivery.store", "local".into()),
        ("delivery.local_dir", dir.path().to_string_lossy().into_owned().into()),
    ]
}

/// Waits (bounded: 10 s) until the simulator has forgotten every task, which it does when their
/// result URLs expire (a request for one is then a 403).
async fn until_the_simulators_urls_expired(app: &TestApp) {
    for _ in 0..1000 {
        if app.sim.task_list().as_array().is_some_and(|tasks| tasks.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the simulator still keeps its tasks: {}", app.sim.task_list());
}

/// The name in a signed link `…/v1/images/files/{name}?expires=…&sig=…`.
fn name_of(url: &str) -> ImageName {
    let path = url.split('?').next().expect("a path");
    let name = path.rsplit('/').next().expect("a name");
    ImageName::parse(name).unwrap_or_else(|| panic!("not an image name: {url}"))
}

/// A 512x384 PNG through the gateway: the reply's URL.
async fn generate_png(app: &TestApp) -> String {
    let reply = app
        .generate(json!({"model": "flux-2-klein-4b", "prompt": "a lighthouse", "size": "512x384", "output_format": "png"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["data"][0]["url"].as_str().expect("a url").to_owned()
}

/// The checks every store must pass.
async fn the_rehosted_url_outlives_bfls_and_is_guarded(app: &TestApp) {
    let url = generate_png(app).await;
    let files = format!("{}/v1/images/files/", app.base);
    assert!(url.starts_with(&files) && url.contains(".png?expires="), "{url}");
    until_the_simulators_urls_expired(app).await;

    // The image, whole and of the size asked for, with its type, caching and CORS headers.
    let response = app.http.get(&url).send().await.expect("gateway answers");
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("content-type").as_deref(), Some("image/png"));
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("*"));
    let cache = header("cache-control").expect("cache-control");
    assert!(cache.starts_with("public, max-age=") && cache.ends_with("immutable"), "{cache}");
    let bytes = response.bytes().await.expect("body");
    let image = image::load_from_memory(&bytes).expect("a decodable image");
    assert_eq!((image.width(), image.height()), (512, 384));
    let name = name_of(&url);
    assert_eq!(name, ImageName::of(&bytes, name.format()), "named by its content");
    let head = app.http.head(&url).send().await.expect("gateway answers");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"].to_str().expect("ascii"), bytes.len().to_string());

    // A tampered signature or expiry is refused; so is a genuine link whose time is up.
    let (path, query) = url.split_once('?').expect("a query");
    let expires: u64 =
        query.split('&').find_map(|p| p.strip_prefix("expires=")).expect("expires").parse().expect("n");
    let sig = query.split('&').find_map(|p| p.strip_prefix("sig=")).expect("sig");
    let flipped = format!("{}{}", if sig.starts_with('0') { "1" } else { "0" }, &sig[1..]);
    let expired = LinkSigner::new(&SecretString::from(SIGNING_KEY.to_owned()), 60)
        .expect("a key")
        .query(&name, unix_now() - 3600);
    for (query, code) in [
        (format!("expires={expires}&sig={flipped}"), "invalid_signature"),
        (format!("expires={}&sig={sig}", expires + 1), "invalid_signature"),
        (format!("expires={expires}"), "invalid_signature"),
        (String::new(), "invalid_signature"),
        (expired, "link_expired"),
    ] {
        let reply = app.get(&format!("{}?{query}", path.trim_start_matches(&app.base))).await;
        assert_eq!(reply.status, 403, "{query}: {}", reply.body);
        assert_eq!(reply.error_code(), Some(code), "{query}");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("*"),
            "errors are readable from a browser"
        );
    }

    // Names that are not content-addressed image names, and a well-formed one that is not kept.
    let missing = ImageName::of(b"never stored", name.format());
    let signed = |n: &ImageName| {
        LinkSigner::new(&SecretString::from(SIGNING_KEY.to_owned()), 60).expect("a key").query(n, unix_now())
    };
    for path in [
        format!("/v1/images/files/{missing}?{}", signed(&missing)),
        format!("/v1/images/files/..%2F..%2Fetc%2Fpasswd?{query}"),
        format!("/v1/images/files/{}?{query}", name.as_str().to_ascii_uppercase()),
        format!("/v1/images/files/{}.gif?{query}", name.as_str().trim_end_matches(".png")),
        format!("/v1/images/files/abc.png?{query}"),
    ] {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert_eq!(reply.error_code(), Some("file_not_found"), "{path}");
    }

    // b64_json reads the kept copy: the simulator serves the image once, to the re-host.
    let before = app.sim.downloads();
    let reply = app
        .generate(json!({"model": "flux-2-klein-4b", "prompt": "a harbour", "size": "256x256", "output_format": "webp", "response_format": "b64_json"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let b64 = reply.body["data"][0]["b64_json"].as_str().expect("b64_json");
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    let image = image::load_from_memory(&bytes).expect("a decodable image");
    assert_eq!((image.width(), image.height()), (256, 256));
    assert_eq!(
        app.sim.downloads() - before,
        1,
        "BFL's URL was read once (by the re-host), not again for b64_json"
    );
}

#[tokio::test]
async fn a_local_store_serves_the_image_after_bfls_url_expired_behind_signed_links() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_rehosting(local_store(&dir)).await;
    the_rehosted_url_outlives_bfls_and_is_guarded(&app).await;
    let kept: Vec<String> = std::fs::read_dir(dir.path())
        .expect("store dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 2, "one file per image: {kept:?}");
    assert!(kept.iter().all(|f| ImageName::parse(f).is_some()), "{kept:?}");
}

#[tokio::test]
async fn b64_json_is_read_from_the_store_once_bfls_url_has_expired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_rehosting(local_store(&dir)).await;
    let url = generate_png(&app).await;
    until_the_simulators_urls_expired(&app).await;
    // A finished job as the job store keeps it, whose BFL URL now answers 403.
    let dead = format!("http://{}/results/gone.png?exp=1&sig=00", app.sim_addr);
    let finished = Finished {
        sample: dead.parse().expect("url"),
        revised_prompt: None,
        task_id: "t".into(),
        cost: None,
        upstream: Duration::ZERO,
        stored: Some(name_of(&url)),
    };
    let origin = LinkOrigin { base: None, anchor: 0 };
    let wanted = Wanted {
        response_format: ResponseFormat::B64Json,
        output_format: OutputFormat::Png,
        deadline: tokio::time::Instant::now() + Duration::from_secs(10),
        limit: Duration::from_secs(10),
    };
    let delivered = app.state.delivery.datum(&finished, wanted, &origin).await.expect("read from the store");
    let b64 = delivered.datum.b64_json.expect("b64_json");
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    assert_eq!(ImageName::of(&bytes, name_of(&url).format()), name_of(&url));
    // Without the kept copy the same job's image is lost with BFL's URL.
    let lost = Finished { stored: None, ..finished };
    let err = app.state.delivery.datum(&lost, wanted, &origin).await.err().expect("BFL's URL has expired");
    assert_eq!(err.status(), 502, "{err}");
}

#[tokio::test]
async fn cors_echoes_a_listed_origin_and_no_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = local_store(&dir);
    store.push(("delivery.cors_origins", vec!["https://app.example".to_owned()].into()));
    let app = spawn_rehosting(store).await;
    let url = generate_png(&app).await;
    let from = |origin: &'static str| app.http.get(&url).header("origin", origin).send();
    let listed = from("https://app.example").await.expect("answers");
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(listed.headers()["vary"], "origin");
    let other = from("https://evil.example").await.expect("answers");
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_a_store_bfls_url_passes_through_and_the_file_route_is_404() {
    let app = spawn_rehosting(Vec::new()).await;
    let url = generate_png(&app).await;
    assert!(url.starts_with(&format!("http://{}", app.sim_addr)), "{url}");
    let name = ImageName::of(b"x", fluxgate::records::StoredFormat::Png);
    let reply = app.get(&format!("/v1/images/files/{name}?expires=1&sig=00")).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

#[tokio::test]
async fn the_file_route_needs_no_client_token_but_generation_still_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = local_store(&dir);
    store.push(("server.api_keys", vec!["sk-test".to_owned()].into()));
    let app = spawn_rehosting(store).await;
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 401);
    let response = app
        .http
        .post(format!("{}/v1/images/generations", app.base))
        .bearer_auth("sk-test")
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "x", "size": "256x256"}))
        .send()
        .await
        .expect("answers");
    let body: serde_json::Value = response.json().await.expect("json");
    let url = body["data"][0]["url"].as_str().expect("url");
    let (_, width, height) = app.fetch_image(url).await;
    assert_eq!((width, height), (256, 256));
}

/// A moto S3 server on a loopback port, killed when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BUCKET: &str = "fluxgate-test";

/// moto from `FLUXGATE_TEST_MOTO`, with the test bucket created; `None` (skipped) when the
/// variable is unset outside CI. Under CI (`CI=true`) a missing moto fails the test.
async fn start_moto() -> Option<Moto> {
    let Some(exe) = std::env::var_os("FLUXGATE_TEST_MOTO") else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "FLUXGATE_TEST_MOTO is not set: CI must run the S3 re-hosting test against moto (see .ci/run)"
        );
        eprintln!("skipped: set FLUXGATE_TEST_MOTO=/path/to/moto_server to run the S3 re-hosting test");
        return None;
    };
    let port = {
        let probe = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a free port");
        probe.local_addr().expect("bound").port()
    };
    let child = std::process::Command::new(&exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.to_string_lossy()));
    let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    // Bounded: moto starts in a few seconds.
    let mut up = false;
    for _ in 0..300 {
        if http.get(&moto.endpoint).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "moto did not answer on {} within 30 s", moto.endpoint);
    // moto takes an unsigned bucket creation.
    let created = http.put(format!("{}/{BUCKET}", moto.endpoint)).send().await.expect("moto answers");
    assert!(created.status().is_success(), "creating the bucket: {}", created.status());
    Some(moto)
}

#[tokio::test]
async fn an_s3_store_serves_the_image_after_bfls_url_expired_behind_signed_links() {
    let Some(moto) = start_moto().await else { return };
    let app = spawn_rehosting(vec![
        ("delivery.store", "s3".into()),
        ("delivery.s3_bucket", BUCKET.into()),
        ("delivery.s3_endpoint", moto.endpoint.clone().into()),
        ("delivery.s3_region", "us-east-1".into()),
        ("delivery.s3_path_style", true.into()),
        ("delivery.s3_prefix", "images/".into()),
        ("delivery.s3_access_key_id", "testing".into()),
        ("delivery.s3_secret_access_key", "testing".into()),
    ])
    .await;
    the_rehosted_url_outlives_bfls_and_is_guarded(&app).await;
    // The objects are in the bucket under the prefix, with their content type.
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let listing = http.get(format!("{}/{BUCKET}?list-type=2", moto.endpoint)).send().await.expect("moto");
    let xml = listing.text().await.expect("listing");
    assert_eq!(xml.matches("<Key>images/").count(), 2, "{xml}");
    let key = xml.split("<Key>").nth(1).and_then(|k| k.split("</Key>").next()).expect("a key");
    let name = ImageName::parse(key.trim_start_matches("images/")).expect("an image name");
    let store = app.state.delivery.store().expect("a store");
    let found = store.get(&name).await.expect("the bucket answers").expect("kept");
    let kind = found.attributes.get(&object_store::Attribute::ContentType).map(|v| v.to_string());
    assert_eq!(kind.as_deref(), Some(name.format().content_type()), "{key}");
}

#[tokio::test]
async fn a_replay_after_bfls_url_expired_gets_the_same_link_and_b64_from_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_rehosting(local_store(&dir)).await;
    let send = |format: &'static str| {
        let body = json!({"model": "flux-2-klein-4b", "prompt": "a kite", "size": "320x240", "output_format": "png", "response_format": format});
        app.http
            .post(format!("{}/v1/images/generations", app.base))
            .header("idempotency-key", format!("k-{format}"))
            .json(&body)
            .send()
    };
    let first: Value = send("url").await.expect("answers").json().await.expect("json");
    let b64_first = send("b64_json").await.expect("answers");
    assert_eq!(b64_first.status(), 200);
    until_the_simulators_urls_expired(&app).await;
    let again: Value = send("url").await.expect("answers").json().await.expect("json");
    assert_eq!(first, again, "the same reply, the same signed link");
    let replay = send("b64_json").await.expect("answers");
    assert_eq!(replay.status(), 200, "the image comes from the store: BFL's URL is gone");
    let body: Value = replay.json().await.expect("json");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().expect("b64"))
        .expect("base64");
    let image = image::load_from_memory(&bytes).expect("an image");
    assert_eq!((image.width(), image.height()), (320, 240));
    assert_eq!(app.sim.submit_attempts(), 2, "one submit per key");
}
